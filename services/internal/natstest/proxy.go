package natstest

import (
	"testing"

	"github.com/infergate/infergate/services/internal/linkproxy"
)

// NewProxy puts a proxy on a loopback port in front of target (a link the
// test cuts, heals or delays), closed when the test ends.
func NewProxy(t testing.TB, target string) *linkproxy.Proxy {
	t.Helper()
	p, err := linkproxy.Listen("127.0.0.1:0", target)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}
