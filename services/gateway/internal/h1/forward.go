package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/bounds"
	"github.com/infergate/infergate/services/gateway/internal/keepalive"
)

// Result is how a forwarded request went.
type Result struct {
	// Answered: the upstream's response head went to the client. An
	// error after that cut the response short and closed the
	// connection: nothing more can be said to the client.
	Answered bool
	// Status is the upstream's status code, when Answered.
	Status int
	// Waited is the time from the request's start to the upstream's
	// response head, or to the failure.
	Waited time.Duration
	// Err: the exchange failed.
	Err error
	// ClientGone: it failed because the client went away or failed to
	// send its body; nobody reads an answer.
	ClientGone bool
}

// Errors of the upstream's response.
var (
	ErrBadResponse = errors.New("h1: malformed upstream response")
	errHeadTooBig  = fmt.Errorf("%w: head too large", ErrBadResponse)
)

// Forward sends req to the plain-http upstream up — its host, its base
// path joined with req.Path, its query merged with req.Query, as
// httputil.ProxyRequest.SetURL does — with X-Forwarded-For, -Host and
// -Proto set as SetXForwarded does and every field marked Drop left out,
// and relays the response: a fixed-length one with its head in as few
// writes as it can (one for a small response), a chunked or
// close-delimited one (SSE) chunk by chunk as each upstream read returns.
// Hop-by-hop headers are removed both ways.
//
// When the result is not Answered and not ClientGone, the client has
// been sent nothing and the handler answers (502).
func (c *Conn) Forward(req *Request, up *url.URL) (res Result) {
	c.take()
	c.tap = req.Tap
	defer func() { c.tap = nil }()
	start := c.now()
	bp := getBuf()
	defer func() { putBuf(bp) }()
	b := appendRequestHead((*bp)[:0], req, up, c.remoteIP)
	b, err := c.appendBody(b)
	if err != nil {
		// A body that did not come in time is answered (408); one the
		// client broke off is not.
		return Result{Waited: time.Since(start), Err: err, ClientGone: !errors.Is(err, bounds.ErrBodyTimeout)}
	}
	out := b
	addr := up.Host
	if up.Port() == "" {
		addr = net.JoinHostPort(up.Hostname(), "80")
	}
	var (
		uc   *keepalive.Conn
		head []byte
	)
	for attempt := 0; ; attempt++ {
		var reused bool
		uc, reused, err = c.s.up.get(c.s.ctx, c.s.Bounds.Connect, addr, c.dial, c.now())
		if !reused {
			c.waits() // it dialled
		}
		if err != nil {
			return Result{Waited: time.Since(start), Err: err}
		}
		// The response head must come within its bound of the request
		// going out; the client is watched meanwhile.
		sent := c.now()
		uc.Bound(c, sent.Add(c.s.Bounds.ResponseHead))
		uc.Clock(sent)
		wrote := false
		// Send: the request goes out, and the answer is awaited without
		// a read that finds nothing first.
		if err = uc.Send(out); err == nil {
			wrote = true
			head, err = readHead(uc.Reader())
		}
		c.waits()
		if err == nil {
			break
		}
		_ = uc.Close()
		if errors.Is(err, keepalive.ErrClientGone) {
			c.closeAfter = true
			return Result{Waited: time.Since(start), Err: err, ClientGone: true}
		}
		// A reused connection the upstream closed before answering: try
		// once more on a fresh one if the request never got out, or may
		// be sent twice. (The body is in memory.)
		if !reused || attempt > 0 || uc.Buffered() > 0 || (wrote && !keepalive.Idempotent(req.Method)) {
			return Result{Waited: time.Since(start), Err: err}
		}
	}
	res.Waited = c.now().Sub(start)
	// The body streams for as long as it lasts (SSE); the client is
	// still watched.
	uc.Bound(c, time.Time{})
	resp, err := parseResponseHead(head)
	if err != nil {
		_ = uc.Close()
		res.Err = err
		return res
	}
	res.Status = resp.status
	noBody := req.Method == http.MethodHead || resp.status == http.StatusNoContent || resp.status == http.StatusNotModified
	// The response head for the client, in the buffer the request was in.
	o := appendStatus((*bp)[:0], resp.status)
	o = resp.appendFields(o, head, noBody && resp.status != http.StatusNoContent)
	if !resp.hasDate {
		o = appendDate(o)
	}
	// The relay's state lives in the connection: a stream parked in an
	// event loop keeps a pointer to it, and a local would be a heap
	// allocation per request.
	c.rl = relay{mode: bodyNone}
	rl := &c.rl
	switch {
	case noBody:
	case resp.chunked:
		rl.mode = bodyChunked
	case resp.length >= 0:
		rl.mode, rl.left = bodyLength, resp.length
		o = append(o, "Content-Length: "...)
		o = strconv.AppendInt(o, resp.length, 10)
		o = append(o, "\r\n"...)
	default:
		rl.mode = bodyUntilClose
	}
	if rl.mode == bodyChunked || rl.mode == bodyUntilClose {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	o = c.appendConnection(o)
	o = append(o, "\r\n"...)
	_, _ = uc.Reader().Discard(len(head))
	keep := !resp.close && rl.mode != bodyUntilClose
	res.Answered = true
	err = c.relay(uc, rl, o, &bp)
	if err != nil {
		res.Err = err
		res.ClientGone = errors.Is(err, keepalive.ErrClientGone) || errors.Is(err, errClientWrite)
		c.closeAfter = true
		_ = uc.Close()
		return res
	}
	if keep && uc.Buffered() == 0 {
		c.s.up.put(uc, c.now())
	} else {
		_ = uc.Close()
	}
	return res
}

// errClientWrite wraps a failed write to the client.
var errClientWrite = errors.New("h1: write to client")

// write writes b to the client within the write bound: a client that
// stops reading fails the write once it has blocked that long. The
// deadline is renewed at most once per slack — a second, or an eighth of
// the bound if that is more — and set that much later than the bound: a
// timer update per write would cost more than the write's bookkeeping,
// and a stream sending a chunk a second would pay one per chunk.
func (c *Conn) write(b []byte) error {
	slack := max(time.Second, c.s.Bounds.Write/8)
	if now := c.now(); now.Sub(c.wroteAt) >= slack {
		c.wroteAt = now
		_ = c.nc.SetWriteDeadline(now.Add(c.s.Bounds.Write + slack))
	}
	_, err := c.probe.Write(b)
	if c.probe.Waited() {
		c.waits()
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errClientWrite, err)
	}
	return nil
}

const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// relay is a response body on its way to the client: how it is framed
// by the upstream, and where its decoding stands.
type relay struct {
	mode int
	// left is what a body of known length still has to come.
	left int64
	// cr decodes a chunked body.
	cr chunkedReader
	// noLoop: an event loop gave the stream back at framing it does not
	// take; it stays on its goroutine.
	noLoop bool
}

// read reads decoded body bytes into p from br; io.EOF at the body's end.
func (rl *relay) read(br *bufio.Reader, p []byte) (int, error) {
	switch rl.mode {
	case bodyLength:
		if rl.left == 0 {
			return 0, io.EOF
		}
		k, err := br.Read(p[:min(int64(len(p)), rl.left)])
		rl.left -= int64(k)
		switch {
		case rl.left == 0:
			err = io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
		return k, err
	case bodyChunked:
		return rl.cr.Read(br, p)
	case bodyUntilClose:
		return br.Read(p)
	}
	return 0, io.EOF
}

// relay sends the head o (in *bp) and the body to the client: one write
// per read from the upstream, so streams (SSE) go out as they come, re-
// framed as chunks unless the length is known. Between reads, when
// nothing from the upstream is buffered, it writes what it has, gives
// back every buffer (*bp, the upstream's read buffer, the client
// connection's) and waits for the upstream holding none: a stream that
// sends a chunk a second costs memory only while a chunk is in flight.
func (c *Conn) relay(uc *keepalive.Conn, rl *relay, o []byte, bp **[]byte) error {
	// The room kept before each read for the chunk-size line.
	const hole = 8
	framed := rl.mode == bodyChunked || rl.mode == bodyUntilClose
	for rl.mode != bodyNone {
		if uc.Buffered() == 0 && (rl.mode != bodyLength || rl.left > 0) {
			if len(o) > 0 {
				if err := c.write(o); err != nil {
					return err
				}
			}
			putBuf(*bp)
			*bp = nil
			uc.Release()
			c.releaseBuf()
			c.waits()
			if framed {
				// An event loop carries the stream while it flows.
				if p, ok := c.s.loops.park(c, uc, rl); ok {
					if p.err != nil {
						return p.err
					}
					if len(p.pending) > 0 {
						if err := c.write(p.pending); err != nil {
							return err
						}
					}
				}
			}
			err := uc.Wait()
			c.waits()
			if err != nil {
				return err
			}
			*bp = getBuf()
			o = (**bp)[:0]
		}
		buf := (**bp)[:cap(**bp)]
		at := len(o)
		if !framed {
			at -= hole // no size line: read right after o
		}
		if rl.mode == bodyChunked {
			c.waits() // a chunk's framing may not be all buffered
		}
		k, err := rl.read(uc.Reader(), buf[at+hole:len(buf)-7])
		// The body's next bytes, as the client gets them.
		data := buf[at+hole : at+hole+k]
		if k > 0 {
			c.tapBody(data)
			if framed {
				size := strconv.AppendInt(buf[at:at], int64(k), 16)
				size = append(size, "\r\n"...)
				copy(buf[at+len(size):], data)
				o = buf[:at+len(size)+k]
				o = append(o, "\r\n"...)
			} else {
				o = buf[:at+hole+k]
			}
		}
		if err == io.EOF {
			if rl.mode == bodyChunked {
				if err := readTrailer(uc.Reader()); err != nil {
					return err
				}
			}
			if framed {
				o = append(o, "0\r\n\r\n"...)
			}
			break
		}
		if err != nil {
			// Whatever was read still goes to the client.
			_ = c.write(o)
			return err
		}
		// A body of known length gathers what is buffered, up to half
		// the buffer, into one write.
		if len(o) > 0 && (framed || uc.Buffered() == 0 || len(o) > len(buf)/2) {
			if err := c.write(o); err != nil {
				return err
			}
			o = buf[:0]
		}
	}
	return c.write(o)
}

// tapBody gives relayed body bytes to the request's Tap, if any.
func (c *Conn) tapBody(p []byte) {
	if c.tap != nil {
		_, _ = c.tap.Write(p)
	}
}

// readTrailer reads the trailer section after the last chunk and drops it
// (the fast path does not pass trailers on).
func readTrailer(br interface{ ReadSlice(byte) ([]byte, error) }) error {
	for range maxFields {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) < 2 || line[len(line)-2] != '\r' {
			return ErrBadResponse
		}
		if len(line) == 2 {
			return nil
		}
		// A trailer field is a field like any other: net/http refuses a
		// line that is not one (found by FuzzResponseAgainstNetHTTP).
		name, value, ok := bytes.Cut(line[:len(line)-2], []byte(":"))
		if !ok || !token(name) || !respValue(value) {
			return ErrBadResponse
		}
	}
	return ErrBadResponse
}

// appendRequestHead writes the upstream request's head.
func appendRequestHead(b []byte, req *Request, up *url.URL, clientIP string) []byte {
	b = append(b, req.Method...)
	b = append(b, ' ')
	// SetURL: the upstream's base path joined with the request's, one
	// slash between them. req.Path has no escapes, so its raw form is
	// itself.
	base := up.EscapedPath()
	switch {
	case base == "":
		b = append(b, req.Path...)
	case strings.HasSuffix(base, "/"):
		b = append(b, base...)
		b = append(b, req.Path[1:]...)
	default:
		b = append(b, base...)
		b = append(b, req.Path...)
	}
	switch {
	case up.RawQuery != "" && req.Query != "":
		b = append(b, '?')
		b = append(b, up.RawQuery...)
		b = append(b, '&')
		b = append(b, req.Query...)
	case up.RawQuery != "":
		b = append(b, '?')
		b = append(b, up.RawQuery...)
	case req.Query != "":
		b = append(b, '?')
		b = append(b, req.Query...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, up.Host...)
	b = append(b, "\r\n"...)
	for i := range req.Header {
		if f := &req.Header[i]; !f.Drop {
			b = append(b, f.Name...)
			b = append(b, ": "...)
			b = append(b, f.Value...)
			b = append(b, "\r\n"...)
		}
	}
	switch {
	case req.ContentLength >= 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, req.ContentLength, 10)
		b = append(b, "\r\n"...)
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		// As http.Request.Write does for these methods.
		b = append(b, "Content-Length: 0\r\n"...)
	}
	if clientIP != "" {
		b = append(b, "X-Forwarded-For: "...)
		b = append(b, clientIP...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Forwarded-Host: "...)
	b = append(b, req.Host...)
	b = append(b, "\r\nX-Forwarded-Proto: http\r\n\r\n"...)
	return b
}

// readHead returns the upstream's final response head (1xx answers other
// than 101 are skipped), still in the reader's buffer: valid until the
// next read.
func readHead(br *bufio.Reader) ([]byte, error) {
	for {
		h, err := peekHead(br)
		if err != nil {
			return nil, err
		}
		// "HTTP/1.1 1xx": informational, the real answer follows. 101
		// is an error here: the fast path never asks for an upgrade.
		if len(h) >= 12 && h[9] == '1' && !bytes.HasPrefix(h[9:], []byte("101")) {
			_, _ = br.Discard(len(h))
			continue
		}
		return h, nil
	}
}

var crlfcrlf = []byte("\r\n\r\n")

func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if i := bytes.Index(b, crlfcrlf); i >= 0 {
			return b[:i+4], nil
		}
		if len(b) == br.Size() {
			return nil, errHeadTooBig
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			if len(b) > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// responseHead is what the proxy needs to know of an upstream response.
type responseHead struct {
	status  int
	length  int64 // -1: none
	chunked bool
	close   bool
	hasDate bool
	// drop are the headers the Connection header names.
	drop  [8][]byte
	ndrop int
}

// parseResponseHead reads the status and the framing of head, strictly:
// anything unclear is ErrBadResponse (and a 502), never a guess.
func parseResponseHead(head []byte) (responseHead, error) {
	r := responseHead{length: -1}
	line, rest, ok := cutLineBytes(head)
	var http10 bool
	switch {
	case !ok:
		return r, ErrBadResponse // a bare LF
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		http10 = true
	default:
		return r, ErrBadResponse
	}
	if len(line) < 12 || (len(line) > 12 && line[12] != ' ') {
		return r, ErrBadResponse
	}
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return r, ErrBadResponse
		}
		r.status = r.status*10 + int(d-'0')
	}
	if r.status < 200 || !respValue(line[12:]) {
		return r, ErrBadResponse
	}
	keepAlive, closeTok := false, false
	var clValue []byte
	for {
		line, rest, ok = cutLineBytes(rest)
		if !ok {
			return r, ErrBadResponse
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !token(name) || !respValue(value) {
			return r, ErrBadResponse
		}
		value = trimOWSBytes(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			// A repeated length must be the same text (net/http
			// refuses "5" and "05" together; found by
			// FuzzResponseAgainstNetHTTP).
			n, ok := digits(value)
			if !ok || (clValue != nil && !bytes.Equal(clValue, value)) {
				return r, ErrBadResponse
			}
			r.length, clValue = n, value
		case asciiEqualFold(name, "Transfer-Encoding"):
			// HTTP/1.0 has no transfer codings: net/http ignores the
			// field and frames by length or close, so a 1.0 response
			// with one has two readings (found by
			// FuzzResponseAgainstNetHTTP).
			if http10 || r.chunked || !asciiEqualFold(value, "chunked") {
				return r, ErrBadResponse
			}
			r.chunked = true
		case asciiEqualFold(name, "Connection"):
			for v := value; len(v) > 0; {
				var tok []byte
				tok, v, _ = bytes.Cut(v, []byte(","))
				switch tok = trimOWSBytes(tok); {
				case len(tok) == 0:
				case asciiEqualFold(tok, "close"):
					closeTok = true
				case asciiEqualFold(tok, "keep-alive"):
					keepAlive = true
				default:
					if r.ndrop == len(r.drop) {
						return r, ErrBadResponse
					}
					r.drop[r.ndrop] = tok
					r.ndrop++
				}
			}
		case asciiEqualFold(name, "Date"):
			r.hasDate = true
		}
	}
	r.close = closeTok || (http10 && !keepAlive)
	if r.chunked {
		// Transfer-Encoding wins over Content-Length (RFC 9112 6.3);
		// the client gets the response re-framed either way.
		r.length = -1
	}
	return r, nil
}

// appendFields copies the response's fields to o, less hop-by-hop ones,
// those the Connection header names and the framing (written apart);
// keepLength keeps Content-Length (HEAD and 304 answers, which have no
// body to frame).
func (r *responseHead) appendFields(o, head []byte, keepLength bool) []byte {
	_, rest, _ := cutLineBytes(head)
	for {
		var line []byte
		line, rest, _ = cutLineBytes(rest)
		if len(line) == 0 {
			return o
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		if hopByHop(name) || (!keepLength && asciiEqualFold(name, "Content-Length")) {
			continue
		}
		named := false
		for _, d := range r.drop[:r.ndrop] {
			if bytes.EqualFold(name, d) {
				named = true
				break
			}
		}
		if !named {
			o = append(o, line...)
			o = append(o, "\r\n"...)
		}
	}
}

func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return asciiEqualFold(name, "TE")
	case 7:
		return asciiEqualFold(name, "Trailer") || asciiEqualFold(name, "Upgrade")
	case 10:
		return asciiEqualFold(name, "Connection") || asciiEqualFold(name, "Keep-Alive")
	case 16:
		return asciiEqualFold(name, "Proxy-Connection")
	case 17:
		return asciiEqualFold(name, "Transfer-Encoding")
	case 18:
		return asciiEqualFold(name, "Proxy-Authenticate")
	case 19:
		return asciiEqualFold(name, "Proxy-Authorization")
	}
	return false
}

func asciiEqualFold[T []byte | string](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// cutLineBytes is cutLine on bytes.
func cutLineBytes(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return b, nil, false
	}
	return b[:i-1], b[i+1:], true
}

func trimOWSBytes(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// respValue: an upstream's field value or reason phrase — no control
// characters but tab (so no CR or LF); obs-text is let through, as
// net/http's client does.
func respValue(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func statusText(code int) string { return http.StatusText(code) }
