//go:build !race

package e2e_test

// e2eRace: see race_on_test.go.
const e2eRace = false
