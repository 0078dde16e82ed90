//go:build race

package e2e_test

// e2eRace: this test binary runs with the race detector, so the CLI binary
// the tests build uses it too (and reuses the packages the test compiled).
const e2eRace = true
