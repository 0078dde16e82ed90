package main

import "testing"

func TestLoopback(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		":8082":          "127.0.0.1:8082",
		"0.0.0.0:8082":   "127.0.0.1:8082",
		"[::]:8082":      "127.0.0.1:8082",
		"10.0.0.5:8082":  "10.0.0.5:8082",
		"127.0.0.1:8082": "127.0.0.1:8082",
	} {
		if got := loopback(in); got != want {
			t.Errorf("loopback(%q) = %q, want %q", in, got, want)
		}
	}
}
