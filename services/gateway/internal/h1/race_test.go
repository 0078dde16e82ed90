//go:build race

package h1

// raceEnabled: the race detector is on (sync.Pool then drops items on
// purpose, and pooled buffers are allocated again).
const raceEnabled = true
