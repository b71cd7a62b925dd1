//go:build race

package fetch

// proofSchedules is how many schedules TestPollPathAgainstModel runs: fewer
// under the race detector, which makes each about five times slower, so
// that CI's -race run stays well under a minute.
const proofSchedules = 800
