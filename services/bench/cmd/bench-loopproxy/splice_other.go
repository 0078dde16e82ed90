//go:build !linux

package main

import (
	"errors"
	"net"
)

type splicer struct{}

func newSplicer() (*splicer, error) { return nil, errors.New("splice needs Linux") }

func (s *splicer) close() {}

func (s *splicer) relay(net.Conn, net.Conn, []byte) error { return errors.New("splice needs Linux") }
