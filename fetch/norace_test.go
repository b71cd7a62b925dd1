//go:build !race

package fetch

// proofSchedules is how many schedules TestPollPathAgainstModel runs.
const proofSchedules = 3000
