//go:build !linux

package main

import (
	"errors"
	"net"
)

func (p *proxy) serveLoop(*net.TCPListener) error {
	return errors.New("loop mode needs Linux (epoll)")
}
