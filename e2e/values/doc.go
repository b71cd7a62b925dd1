// Package values holds end-to-end tests of values from AWS and .env files:
// fetching, secrets, references, sanitised errors, deadlines and the first-run messages, against the real binary and moto.
package values
