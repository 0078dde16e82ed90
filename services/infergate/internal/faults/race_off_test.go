//go:build !race

package faults_test

// raceEnabled: see race_on_test.go.
const raceEnabled = false
