package h1

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/tally"
)

// BenchmarkRelaySSE is one streamed chat completion relayed by the fast
// path on a kept-alive connection: 300 SSE chunks (each with
// "usage":null, as with stream_options.include_usage) and a final usage
// chunk, ~60 KB chunked, from an upstream that answers from a fixed
// buffer. "plain" relays it; "scanner" also feeds it to the gateway's
// token scanner (Request.Tap), as the proxy does for every forwarded
// request: the difference is what looking for token usage costs.
func BenchmarkRelaySSE(b *testing.B) {
	var body strings.Builder
	for i := range 300 {
		fmt.Fprintf(&body, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word%d \"},\"finish_reason\":null}],\"usage\":null}\n\n", i)
	}
	body.WriteString("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":300,\"total_tokens\":312}}\n\ndata: [DONE]\n\n")
	// The upstream's response: chunked, one chunk per event.
	var resp bytes.Buffer
	resp.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
	for _, ev := range strings.SplitAfter(body.String(), "\n\n") {
		if ev != "" {
			fmt.Fprintf(&resp, "%x\r\n%s\r\n", len(ev), ev)
		}
	}
	resp.WriteString("0\r\n\r\n")
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer upLn.Close()
	go func() {
		for {
			c, err := upLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				n := 0
				for {
					k, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += k
					if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
						n = copy(buf, buf[i+4:n])
						if _, err := c.Write(resp.Bytes()); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	up, _ := url.Parse("http://" + upLn.Addr().String())
	for _, mode := range []string{"plain", "scanner"} {
		b.Run(mode, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			s := &Server{Fallback: &http.Server{Handler: http.NotFoundHandler()}}
			h := &tapHandler{up: up, scan: mode == "scanner"}
			s.SetHandler(h, nil)
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- s.Serve(ctx, ln, time.Second) }()
			defer func() { cancel(); <-served }()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /v1/chat/completions HTTP/1.1\r\nHost: model-chat.bench.localhost\r\n\r\n")
			buf := make([]byte, 256<<10)
			end := []byte("\r\n0\r\n\r\n")
			roundTrip := func() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				n := 0
				for !bytes.HasSuffix(buf[:n], end) {
					k, err := c.Read(buf[n:])
					if err != nil {
						b.Fatal(err)
					}
					n += k
				}
			}
			roundTrip()
			b.SetBytes(int64(body.Len()))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				roundTrip()
			}
			b.StopTimer()
			if h.scan {
				if p, q, ok := h.s.Usage(); !ok || p != 12 || q != 300 {
					b.Fatalf("scanner found %d, %d, %v", p, q, ok)
				}
			}
		})
	}
}

type tapHandler struct {
	up   *url.URL
	scan bool
	s    tally.Scanner
}

func (h *tapHandler) ServeH1(c *Conn, req *Request) bool {
	if h.scan {
		h.s.Reset()
		req.Tap = &h.s
	}
	c.Forward(req, h.up)
	return true
}

var _ io.Writer = (*tally.Scanner)(nil)
