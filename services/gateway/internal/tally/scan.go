package tally

import "bytes"

// Scanner finds the token usage an upstream reports in a response body
// relayed through it piece by piece, without keeping the body: the last
// JSON object that is the value of a "usage" member — the one of a
// non-streamed completion, or of the final SSE chunk when
// stream_options.include_usage is set (earlier chunks carry
// "usage": null) — and in it the top-level prompt_tokens and
// completion_tokens (or input_tokens and output_tokens). Its state is a
// few dozen bytes whatever the body; it is not a JSON parser, and a body
// that is not JSON simply yields nothing. Compressed bodies yield
// nothing.
//
// Write never fails and never keeps p; the zero Scanner is ready.
type Scanner struct {
	st   uint8
	m    uint8 // bytes of `"usage"` matched at the end of the last write
	prev byte  // the last byte of the last write, in the seek state

	// In the usage object.
	depth               uint8
	inStr, esc, collect bool
	expectKey, haveKey  bool
	awaitNum, inNum     bool
	klen                uint8
	key                 [20]byte
	target              uint8 // 1 prompt, 2 completion
	num                 uint64
	cur                 [3]uint64
	seen                [3]bool
	prompt, completion  uint64
	found               bool
}

const (
	stSeek = iota
	stColon
	stOpen
	stObject
)

var (
	usageKey  = []byte(`"usage"`)
	usageTail = usageKey[1:]
)

// maxDepth bounds the nesting followed inside the usage object.
const maxDepth = 16

// Reset makes s ready for another body.
func (s *Scanner) Reset() { *s = Scanner{} }

// Usage is the last usage object's tokens; ok is false when none was
// seen.
func (s *Scanner) Usage() (prompt, completion uint64, ok bool) {
	return s.prompt, s.completion, s.found
}

// Write feeds the next bytes of the body.
func (s *Scanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		switch s.st {
		case stSeek:
			if s.m > 0 {
				for s.m < uint8(len(usageKey)) && len(p) > 0 && p[0] == usageKey[s.m] {
					s.m++
					p = p[1:]
				}
				switch {
				case s.m == uint8(len(usageKey)):
					s.m, s.st = 0, stColon
				case len(p) > 0:
					s.m = 0 // mismatch: look again from this byte
				}
				continue
			}
			// Look for `usage"` and check the quote before it: 'u' is
			// much rarer than '"' in JSON, which keeps bytes.Index on its
			// fast path.
			i := bytes.Index(p, usageTail)
			switch {
			case i < 0:
				s.m = partial(p, s.prev)
				s.prev = p[len(p)-1]
				return n, nil
			case (i > 0 && p[i-1] == '"') || (i == 0 && s.prev == '"'):
				s.st = stColon
			}
			s.prev = '"' // the quote that closes usage
			p = p[i+len(usageTail):]
		case stColon, stOpen:
			b := p[0]
			switch {
			case b == ' ' || b == '\t' || b == '\r' || b == '\n':
				p = p[1:]
			case s.st == stColon && b == ':':
				s.st = stOpen
				p = p[1:]
			case s.st == stOpen && b == '{':
				s.begin()
				p = p[1:]
			default:
				s.st = stSeek // "usage": null, or "usage" was a value
			}
		case stObject:
			p = s.object(p)
		}
	}
	return n, nil
}

// partial is how many bytes at the end of p begin `"usage"` (prev is the
// byte before p).
func partial(p []byte, prev byte) uint8 {
	for k := min(len(usageKey)-1, len(p)+1); k > 0; k-- {
		if k <= len(p) {
			if bytes.Equal(p[len(p)-k:], usageKey[:k]) {
				return uint8(k)
			}
			continue
		}
		// The quote was the last byte of the write before.
		if prev == '"' && bytes.Equal(p, usageKey[1:k]) {
			return uint8(k)
		}
	}
	return 0
}

func (s *Scanner) begin() {
	s.st, s.depth = stObject, 1
	s.inStr, s.esc, s.collect, s.haveKey, s.awaitNum, s.inNum = false, false, false, false, false, false
	s.expectKey = true
	s.cur, s.seen = [3]uint64{}, [3]bool{}
}

// object follows the usage object; it returns what is left of p after
// the object's end, or nothing.
func (s *Scanner) object(p []byte) []byte {
	for i := 0; i < len(p); i++ {
		b := p[i]
		if s.inStr {
			switch {
			case s.esc:
				s.esc = false
				s.klen = 255 // an escaped key is none of ours
			case b == '\\':
				s.esc = true
			case b == '"':
				s.inStr = false
				if s.collect {
					s.collect, s.haveKey = false, true
				}
			case s.collect:
				if int(s.klen) < len(s.key) {
					s.key[s.klen] = b
					s.klen++
				} else {
					s.klen = 255
				}
			}
			continue
		}
		if s.inNum {
			if b >= '0' && b <= '9' {
				if s.num < 1e17 {
					s.num = s.num*10 + uint64(b-'0')
				}
				continue
			}
			s.inNum = false
			s.cur[s.target], s.seen[s.target] = s.num, true
			s.target = 0
		}
		switch b {
		case ' ', '\t', '\r', '\n':
		case '"':
			s.inStr = true
			if s.depth == 1 && s.expectKey {
				s.collect, s.expectKey, s.klen = true, false, 0
			}
		case ':':
			if s.depth == 1 && s.haveKey {
				s.haveKey = false
				s.target = s.targetOf()
				s.awaitNum = s.target != 0
			}
		case ',':
			s.awaitNum = false
			if s.depth == 1 {
				s.expectKey = true
			}
		case '{', '[':
			s.awaitNum = false
			if s.depth++; s.depth > maxDepth {
				s.st = stSeek
				return p[i+1:]
			}
		case '}', ']':
			s.awaitNum = false
			if s.depth--; s.depth == 0 {
				if s.seen[1] || s.seen[2] {
					s.prompt, s.completion, s.found = s.cur[1], s.cur[2], true
				}
				s.st = stSeek
				return p[i+1:]
			}
		default:
			if s.awaitNum && b >= '0' && b <= '9' {
				s.inNum, s.num = true, uint64(b-'0')
			}
			s.awaitNum = false
		}
	}
	return nil
}

func (s *Scanner) targetOf() uint8 {
	if s.klen == 255 {
		return 0
	}
	switch string(s.key[:s.klen]) {
	case "prompt_tokens", "input_tokens":
		return 1
	case "completion_tokens", "output_tokens":
		return 2
	}
	return 0
}
