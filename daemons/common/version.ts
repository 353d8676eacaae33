/** The package version, shown by --version. Kept in step with package.json by a test. */
export const VERSION = '0.1.0';
