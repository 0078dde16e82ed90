//go:build !linux

package h1

import "github.com/infergate/infergate/services/gateway/internal/keepalive"

// Event loops need epoll: elsewhere every stream waits on its own
// goroutine.
type loops struct{}

type parking struct{}

type parked struct {
	pending []byte
	err     error
}

func newLoops(int) *loops { return nil }

func (*loops) close() {}

func (*loops) park(*Conn, *keepalive.Conn, *relay) (parked, bool) { return parked{}, false }

func (*loops) parked() (now, total uint64) { return 0, 0 }
