// Command bench-loopproxy is a measuring instrument, not a product: the
// smallest HTTP/1.1 key-checking proxy the load benchmark's traffic
// needs, built twice over the same request handling — once with a
// goroutine per connection on Go's poller (the gateway's model), once as
// one event loop on epoll that never parks a goroutine (nginx's and
// HAProxy's model) — to measure what an event-loop front end could buy
// the gateway on this machine before anyone rewrites one (issue 12,
// point 4: "measure the alternatives"; docs/benchmarks.md, "An event loop
// for whole connections, measured").
//
// Both modes do the same work per request, and less than the gateway
// does (no route, no deployment, no usage, no bounds, no fallback): find
// the head, check X-API-Key in a hash set of the benchmark's keys (as
// nginx's map does), answer 401 or forward the request without the key
// and with X-Forwarded-For, -Host and -Proto over a keep-alive upstream
// connection, and relay a Content-Length response as it came. Anything
// else (chunked bodies, pipelining, a partial write) closes the
// connection: the benchmark never sends it.
//
// With --splice (goroutine mode) the answer goes from the upstream's
// socket to the client's through a pipe (splice(2)), never through user
// space: what splice for bodies would buy.
//
//	bench-loopproxy --addr 127.0.0.1:18006 --upstream 127.0.0.1:18001 --keys keys.txt --mode loop
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18006", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:18001", "upstream address")
	keysFile := flag.String("keys", "keys.txt", "the accepted keys, one per line")
	mode := flag.String("mode", "loop", "loop (epoll, one goroutine) or goroutine (one per connection)")
	splice := flag.Bool("splice", false, "goroutine mode: relay answers with splice(2) through a pipe per connection")
	flag.Parse()
	keys, err := readKeys(*keysFile)
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fail(err)
	}
	p := &proxy{keys: keys, upstream: *upstream, splice: *splice}
	fmt.Fprintf(os.Stderr, "bench-loopproxy: %s mode on %s, %d keys\n", *mode, ln.Addr(), len(keys))
	switch *mode {
	case "loop":
		err = p.serveLoop(ln.(*net.TCPListener))
	case "goroutine":
		err = p.serveGoroutines(ln)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	fail(err)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-loopproxy:", err)
	os.Exit(1)
}

func readKeys(path string) (map[string]struct{}, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	keys := map[string]struct{}{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k := bytes.TrimSpace(sc.Bytes()); len(k) > 0 {
			keys[string(k)] = struct{}{}
		}
	}
	return keys, sc.Err()
}

type proxy struct {
	keys     map[string]struct{}
	upstream string
	splice   bool
}

const bufSize = 16 << 10

// dialTimeout bounds an upstream connect.
const dialTimeout = 5 * time.Second

var (
	answer401 = []byte("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n" +
		`{"error":{"code":"invalid_api_key","type":"auth"}}`)
	answerReady = []byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
)

// request looks at what a client sent: 0 when more must come; -1 when it
// cannot be taken (the connection closes); else the request's length,
// with out set to what goes upstream (appended to out) or to a whole
// answer for the client (local).
func (p *proxy) request(in []byte, clientIP string, out []byte) (n int, fwd []byte, local []byte) {
	end := bytes.Index(in, []byte("\r\n\r\n"))
	if end < 0 {
		if len(in) == cap(in) {
			return -1, nil, nil
		}
		return 0, nil, nil
	}
	head := in[:end+2]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	var host, key []byte
	length := 0
	fwd = append(out, line...)
	fwd = append(fwd, "\r\n"...)
	for len(rest) > 0 {
		var f []byte
		f, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(f, []byte(":"))
		if !ok {
			return -1, nil, nil
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("x-api-key")):
			key = value
			continue
		case bytes.EqualFold(name, []byte("host")):
			host = value
		case bytes.EqualFold(name, []byte("content-length")):
			v, err := strconv.Atoi(string(value))
			if err != nil || v < 0 || v > bufSize/2 {
				return -1, nil, nil
			}
			length = v
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			return -1, nil, nil
		}
		fwd = append(fwd, f...)
		fwd = append(fwd, "\r\n"...)
	}
	n = end + 4 + length
	if len(in) < n {
		return 0, nil, nil
	}
	if bytes.HasPrefix(line, []byte("GET /readyz ")) {
		return n, nil, answerReady
	}
	if _, ok := p.keys[string(key)]; !ok {
		return n, nil, answer401
	}
	fwd = append(fwd, "X-Forwarded-For: "...)
	fwd = append(fwd, clientIP...)
	fwd = append(fwd, "\r\nX-Forwarded-Host: "...)
	fwd = append(fwd, host...)
	fwd = append(fwd, "\r\nX-Forwarded-Proto: http\r\n\r\n"...)
	fwd = append(fwd, in[end+4:n]...)
	return n, fwd, nil
}

// response is the length of the whole response at the start of in: 0
// when more must come, -1 when it is not one this proxy relays.
func response(in []byte) int {
	end := bytes.Index(in, []byte("\r\n\r\n"))
	if end < 0 {
		if len(in) == cap(in) {
			return -1
		}
		return 0
	}
	length := -1
	for rest := in[:end+2]; len(rest) > 0; {
		var f []byte
		f, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(f, []byte(":"))
		if ok && bytes.EqualFold(name, []byte("content-length")) {
			v, err := strconv.Atoi(string(bytes.TrimSpace(value)))
			if err != nil || v < 0 {
				return -1
			}
			length = v
		}
	}
	if length < 0 || end+4+length > cap(in) {
		return -1
	}
	if n := end + 4 + length; len(in) >= n {
		return n
	}
	return 0
}

// serveGoroutines is the goroutine-per-connection model: blocking reads
// and writes on Go's poller, upstream connections in a shared idle list.
func (p *proxy) serveGoroutines(ln net.Listener) error {
	var mu sync.Mutex
	var idle []net.Conn
	get := func() (net.Conn, error) {
		mu.Lock()
		if n := len(idle); n > 0 {
			c := idle[n-1]
			idle = idle[:n-1]
			mu.Unlock()
			return c, nil
		}
		mu.Unlock()
		return net.DialTimeout("tcp", p.upstream, dialTimeout)
	}
	put := func(c net.Conn) {
		mu.Lock()
		idle = append(idle, c)
		mu.Unlock()
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			in := make([]byte, 0, bufSize)
			out := make([]byte, 0, bufSize)
			resp := make([]byte, 0, bufSize)
			var sp *splicer
			if p.splice {
				var err error
				if sp, err = newSplicer(); err != nil {
					return
				}
				defer sp.close()
			}
			for {
				n, fwd, local := p.request(in, ip, out[:0])
				if n < 0 {
					return
				}
				if n == 0 {
					k, err := c.Read(in[len(in):cap(in)])
					if err != nil {
						return
					}
					in = in[:len(in)+k]
					continue
				}
				in = in[:copy(in, in[n:])]
				if local != nil {
					if _, err := c.Write(local); err != nil {
						return
					}
					continue
				}
				uc, err := get()
				if err != nil {
					return
				}
				if _, err := uc.Write(fwd); err != nil {
					uc.Close()
					return
				}
				if sp != nil {
					if err := sp.relay(c, uc, resp[:cap(resp)]); err != nil {
						uc.Close()
						return
					}
					put(uc)
					continue
				}
				resp = resp[:0]
				m := 0
				for m == 0 {
					k, err := uc.Read(resp[len(resp):cap(resp)])
					if err != nil {
						uc.Close()
						return
					}
					resp = resp[:len(resp)+k]
					m = response(resp)
				}
				if m < 0 || m != len(resp) {
					uc.Close()
					return
				}
				put(uc)
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}()
	}
}
