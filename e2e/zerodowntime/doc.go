// Package zerodowntime holds end-to-end tests of --listen and --proxy in stop-first restarts:
// requests under load across changes, the socket-activation protocol, and the proxy's connections.
package zerodowntime
