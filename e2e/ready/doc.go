// Package ready holds end-to-end tests of readiness and rollback:
// --ready checks, systemd notification, and rolling a rejected change back.
package ready
