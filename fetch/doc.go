// Package fetch reads configuration from Parameter Store, Secrets Manager and
// dotenv files, names it as environment variables, and watches it for change.
//
// It knows nothing of processes: it turns sources into variables and reports
// when those variables change; the caller decides what a change means.
package fetch
