/** Scenarios: the host side scripted in a readable language, its runner and recordings, a console. */
export {
  COMMANDS,
  HOST_ERROR_KINDS,
  POOL_NAMES,
  ScenarioSyntaxError,
  commandSpec,
  dataBytes,
  parseDuration,
  parseScenario,
  parseStatus,
  quoteWord,
  tryParseScenario,
} from './parse.js';
export type {
  CommandSpec,
  CompareOp,
  DataArg,
  Expectation,
  HostErrorKind,
  ParseOptions,
  ScenarioIssue,
  Step,
  StepCommand,
  StepOp,
} from './parse.js';
export {
  DEFAULT_STEP_TIMEOUT_MS,
  ScenarioRunner,
  compareRecordings,
  formatDifferences,
  recordingToJson,
  runScenario,
} from './run.js';
export type {
  CompareOptions,
  FieldChange,
  HostView,
  RecordedStep,
  Recording,
  RunOptions,
  ScenarioFaults,
  StepDifference,
  StepFilter,
} from './run.js';
export { formatEntry, helpText, runConsole } from './console.js';
export type { ConsoleOptions } from './console.js';
