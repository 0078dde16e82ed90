//go:build race

package faults_test

// raceEnabled: this test binary has the race detector, so the binaries it
// builds have it too.
const raceEnabled = true
