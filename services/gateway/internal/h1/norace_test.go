//go:build !race

package h1

// raceEnabled: the race detector is on.
const raceEnabled = false
