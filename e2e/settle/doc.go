// Package settle holds end-to-end tests of when a change restarts the child:
// --settle joining changes, --settle-max bounding the wait, --splay delaying it, and their usage errors.
package settle
