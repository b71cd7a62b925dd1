// Package files holds end-to-end tests of values delivered as files: the
// private directory, reload by a signal instead of a restart, real nginx.
package files
