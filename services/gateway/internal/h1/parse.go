package h1

import (
	"bytes"
	"io"
	"strings"
)

// Request is one request head, parsed strictly. Its strings slice the
// connection's copy of the head, which the next request on the connection
// overwrites: they are valid until the handler returns, and a handler
// that keeps one (beyond a log line) must copy it (strings.Clone).
type Request struct {
	Method string
	// Path is the origin-form path: '/' then path characters, never a
	// '%' (requests with escapes go to net/http), so it is the same
	// decoded as on the wire.
	Path string
	// Query is what follows the '?', without it; "" when none.
	Query string
	// Host is the one Host header's value.
	Host string
	// Header are the header fields in the order received, hop-by-hop and
	// forwarding headers already marked Drop.
	Header []Field
	// ContentLength is the body's length; -1 when the request has no
	// Content-Length (and so no body: chunked requests go to net/http).
	ContentLength int64
	// Close: the client asked to close the connection after this
	// request.
	Close bool
	// Tap, if set by the handler, is given every byte of the response
	// body Forward relays (without chunk framing), as it goes: the
	// gateway's token scanner. It must not block or keep the bytes.
	Tap io.Writer
}

// Field is one header field.
type Field struct {
	Name, Value string
	// Drop keeps the field from going upstream. The parser marks
	// hop-by-hop headers, client-sent X-Forwarded-* and Forwarded (the
	// proxy sets its own) and Content-Length (the proxy writes its own);
	// the handler marks the credentials it strips.
	Drop bool
}

// Get returns the first value of the header named name (any case) and
// whether there is one.
func (r *Request) Get(name string) (string, bool) {
	for i := range r.Header {
		if strings.EqualFold(r.Header[i].Name, name) {
			return r.Header[i].Value, true
		}
	}
	return "", false
}

const maxFields = 128

// headEnd returns the length of the request head at the start of b — up
// to and including the empty line — or -1 if b does not hold a whole head
// yet. Lines may end in LF alone here; parse then refuses them.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		j += i
		if j+1 < len(b) && b[j+1] == '\n' {
			return j + 2
		}
		if j+2 < len(b) && b[j+1] == '\r' && b[j+2] == '\n' {
			return j + 3
		}
		if j+2 >= len(b) {
			// Not decidable yet: the next byte(s) may end the head.
			if j+1 == len(b) || (j+2 == len(b) && b[j+1] == '\r') {
				return -1
			}
		}
		i = j + 1
	}
}

// parse parses a whole head (as headEnd found it) into r, which it
// resets. It reports false for anything it does not take — which then
// goes to net/http, stricter than the fast path needs to be and the
// reference for what is an error — so that what it takes has one meaning
// only: request line "METHOD /path[?query] HTTP/1.1", CRLF line endings,
// no obs-fold, token field names, field values of visible ASCII, space
// and tab, exactly one Host, at most one Content-Length of plain digits
// up to maxBody, and no Transfer-Encoding, Upgrade, Expect, TE or
// Trailer. Request smuggling needs two readings of one request; a request
// with two possible readings is never taken here.
func (r *Request) parse(head string, maxBody int64) bool {
	hdr := r.Header[:0]
	*r = Request{Header: hdr, ContentLength: -1}
	line, rest, ok := cutLine(head)
	if !ok {
		return false
	}
	// Request line.
	method, line, ok := strings.Cut(line, " ")
	if !ok || !token(method) || method == "CONNECT" || method == "PRI" {
		return false
	}
	target, version, ok := strings.Cut(line, " ")
	if !ok || version != "HTTP/1.1" {
		return false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	if !validPath(path) || (hasQuery && !validQuery(query)) {
		return false
	}
	r.Method, r.Path, r.Query = method, path, query
	hasHost := false
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if line == "" {
			break
		}
		if len(hdr) == maxFields {
			return false
		}
		name, value, ok := strings.Cut(line, ":")
		// A line starting with space or tab (obs-fold) has no token
		// before its colon; nor has "Name : value".
		if !ok || !token(name) {
			return false
		}
		value = trimOWS(value)
		if !fieldValue(value) {
			return false
		}
		f := Field{Name: name, Value: value}
		switch len(name) {
		case 2:
			if strings.EqualFold(name, "TE") {
				return false
			}
		case 4:
			if strings.EqualFold(name, "Host") {
				if hasHost || !validHost(value) {
					return false
				}
				hasHost, r.Host, f.Drop = true, value, true
			}
		case 6:
			if strings.EqualFold(name, "Expect") {
				return false
			}
		case 7:
			if strings.EqualFold(name, "Upgrade") || strings.EqualFold(name, "Trailer") {
				return false
			}
		case 9:
			f.Drop = strings.EqualFold(name, "Forwarded")
		case 10:
			switch {
			case strings.EqualFold(name, "Connection"):
				if !r.connection(value) {
					return false
				}
				f.Drop = true
			case strings.EqualFold(name, "Keep-Alive"):
				f.Drop = true
			}
		case 14:
			if strings.EqualFold(name, "Content-Length") {
				if r.ContentLength >= 0 {
					return false
				}
				n, ok := digits(value)
				if !ok || n > maxBody {
					return false
				}
				r.ContentLength, f.Drop = n, true
			}
		case 15:
			f.Drop = strings.EqualFold(name, "X-Forwarded-For")
		case 16:
			f.Drop = strings.EqualFold(name, "Proxy-Connection") || strings.EqualFold(name, "X-Forwarded-Host")
		case 17:
			if strings.EqualFold(name, "Transfer-Encoding") {
				return false
			}
			f.Drop = strings.EqualFold(name, "X-Forwarded-Proto")
		case 18:
			f.Drop = strings.EqualFold(name, "Proxy-Authenticate")
		case 19:
			f.Drop = strings.EqualFold(name, "Proxy-Authorization")
		}
		hdr = append(hdr, f)
	}
	r.Header = hdr
	return hasHost && rest == ""
}

// cutLine cuts s after its first line: line without its CRLF, and what
// follows; false when that line ends in a bare LF or does not end. (Two
// looks for one byte: strings.Cut with "\r\n" costs twice as much.)
func cutLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 1 || s[i-1] != '\r' {
		return s, "", false
	}
	return s[:i-1], s[i+1:], true
}

// connection reads a Connection header's tokens: close and keep-alive are
// understood; any other token names a header to remove, which the fast
// path leaves to net/http's ReverseProxy.
func (r *Request) connection(v string) bool {
	for v != "" {
		var tok string
		tok, v, _ = strings.Cut(v, ",")
		switch tok = trimOWS(tok); {
		case tok == "":
		case strings.EqualFold(tok, "close"):
			r.Close = true
		case strings.EqualFold(tok, "keep-alive"):
		default:
			return false
		}
	}
	return true
}

// digits parses a Content-Length: 1 to 15 decimal digits, nothing else.
func digits[T string | []byte](s T) (int64, bool) {
	if len(s) == 0 || len(s) > 15 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// Character classes (RFC 9110, 9112, 3986).
const (
	cToken = 1 << iota // tchar
	cPath              // pchar without '%', and '/'
	cQuery             // query: pchar, '/', '?', with '%' checked apart; no ';'
	cHost              // a Host value, conservatively
)

var class = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0 {
			t[c] |= cToken
		}
		if alnum || strings.IndexByte("-._~!$&'()*+,;=:@/", byte(c)) >= 0 {
			t[c] |= cPath
		}
		if alnum || strings.IndexByte("-._~!$&'()*+,=:@/?%", byte(c)) >= 0 {
			t[c] |= cQuery
		}
		if alnum || strings.IndexByte("-._:[]", byte(c)) >= 0 {
			t[c] |= cHost
		}
	}
	return t
}()

func token[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if class[s[i]]&cToken == 0 {
			return false
		}
	}
	return true
}

func validPath(s string) bool {
	if s == "" || s[0] != '/' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if class[s[i]]&cPath == 0 {
			return false
		}
	}
	return true
}

// validQuery accepts what httputil.ReverseProxy would pass unchanged: no
// ';' and only well-formed escapes (it re-encodes other queries).
func validQuery(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if class[c]&cQuery == 0 {
			return false
		}
		if c == '%' {
			if i+2 >= len(s) || !hex(s[i+1]) || !hex(s[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func hex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func validHost(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if class[s[i]]&cHost == 0 {
			return false
		}
	}
	return true
}

// fieldValue: visible ASCII, space and tab. No CTL (so no CR or LF), and
// no obs-text: such requests go to net/http.
func fieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}
