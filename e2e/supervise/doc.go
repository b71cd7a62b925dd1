// Package supervise holds end-to-end tests of supervision:
// restarts on change, signals, the child's process tree, settle and splay, output, env files and their limits.
package supervise
