//go:build race

package harness

// raceEnabled builds the binary under test with -race too, so the race
// detector also watches the process a user would run.
const raceEnabled = true
