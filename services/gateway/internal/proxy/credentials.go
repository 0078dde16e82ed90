package proxy

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"unsafe"

	"github.com/infergate/infergate/services/internal/apikey"
)

// What never goes upstream, on either front end and whether the
// deployment's auth is on or off (SPEC §3; docs/gateway.md, "Headers
// removed"):
//
//   - a header whose name is X-API-Key ignoring case, '-' and '_'
//     (X_API_KEY, x-api_key, XApiKey: CGI and WSGI upstreams read them all
//     as X-API-Key), whatever its value;
//   - a header field whose value carries a well-formed infergate key
//     anywhere in it — Authorization in any scheme or none ("Basic <key>",
//     "<key>", "Bearer\t<key>"), and any other header too;
//   - an Authorization field with Basic credentials (base64) that carry one;
//   - a query parameter whose name or value carries one, as sent or
//     percent-decoded (?api_key=<key>, ?key=ig%5F…): a key in a URL ends
//     up in the upstream's access logs (stripQuery).
//
// Other fields of the same name stay (an upstream's own token in a second
// Authorization field).

// credentialName reports whether a header name is x-api-key ignoring
// case, '-' and '_'.
func credentialName(name string) bool {
	const want = "xapikey"
	j := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '-' || c == '_' {
			continue
		}
		// want is letters only: c|0x20 equals one only for that letter in
		// either case.
		if j == len(want) || c|0x20 != want[j] {
			return false
		}
		j++
	}
	return j == len(want)
}

// credentialField reports whether a header field must not go upstream.
func credentialField(name, value string) bool {
	return credentialName(name) || carriesKey(value) ||
		(len(name) == len("Authorization") && strings.EqualFold(name, "Authorization") && basicCarriesKey(value))
}

// carriesKey reports whether s contains a well-formed infergate key.
func carriesKey(s string) bool {
	for {
		i := strings.Index(s, apikey.Prefix)
		if i < 0 || len(s)-i < apikey.Len {
			return false
		}
		if apikey.WellFormed(s[i : i+apikey.Len]) {
			return true
		}
		s = s[i+len(apikey.Prefix):]
	}
}

// basicCarriesKey reports whether an Authorization value is Basic
// credentials whose user or password carries a well-formed infergate key
// (curl -u <key>:).
func basicCarriesKey(v string) bool {
	scheme, cred, ok := cutSpace(v)
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	cred = strings.Trim(cred, " \t")
	var stack [256]byte
	buf := stack[:]
	if n := base64.StdEncoding.DecodedLen(len(cred)); n > len(buf) {
		buf = make([]byte, n)
	}
	// Whatever decodes before an error is checked too. The view of cred
	// copies nothing; Decode keeps nothing.
	n, _ := base64.StdEncoding.Decode(buf, unsafe.Slice(unsafe.StringData(cred), len(cred)))
	return bytesCarryKey(buf[:n])
}

// bytesCarryKey is carriesKey for bytes. Only a candidate after an "ig_"
// is copied (to check it): buf stays on the stack for ordinary Basic
// credentials.
func bytesCarryKey(b []byte) bool {
	for {
		i := bytes.Index(b, []byte(apikey.Prefix))
		if i < 0 || len(b)-i < apikey.Len {
			return false
		}
		if apikey.WellFormed(string(b[i : i+apikey.Len])) {
			return true
		}
		b = b[i+len(apikey.Prefix):]
	}
}

// stripQuery returns the raw query q without the parameters that carry a
// well-formed infergate key in their name or value, as sent or with their
// percent escapes decoded; the other parameters stay as they were, in
// their order. A query without '%' and without a key is returned as it is,
// allocating nothing.
func stripQuery(q string) string {
	if !strings.Contains(q, "%") && !carriesKey(q) {
		return q
	}
	out := make([]byte, 0, len(q))
	for part := range strings.SplitSeq(q, "&") {
		if carriesKey(part) || carriesKey(unescapeLoose(part)) {
			continue
		}
		if len(out) > 0 {
			out = append(out, '&')
		}
		out = append(out, part...)
	}
	return string(out)
}

// unescapeLoose decodes s's well-formed percent escapes and leaves every
// other byte as it is (a malformed escape must not hide a key from the
// check: an upstream may decode loosely too).
func unescapeLoose(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if hi, lo := unhex(s[i+1]), unhex(s[i+2]); hi >= 0 && lo >= 0 {
				b = append(b, byte(hi<<4|lo))
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// cutSpace cuts v around its first space or tab.
func cutSpace(v string) (before, after string, ok bool) {
	if i := strings.IndexAny(v, " \t"); i >= 0 {
		return v[:i], v[i+1:], true
	}
	return v, "", false
}

// stripCredentials removes from h, in place, every field that must not go
// upstream.
func stripCredentials(h http.Header) {
	for name, values := range h {
		if credentialName(name) {
			delete(h, name)
			continue
		}
		kept := values[:0]
		for _, v := range values {
			if !credentialField(name, v) {
				kept = append(kept, v)
			}
		}
		switch {
		case len(kept) == 0:
			delete(h, name)
		case len(kept) < len(values):
			h[name] = kept
		}
	}
}
