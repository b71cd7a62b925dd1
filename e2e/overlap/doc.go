// Package overlap holds end-to-end tests of --restart overlap:
// zero-downtime under load with two children at once, and what happens when one of them dies or stops.
package overlap
