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
//   - an Authorization field with Basic credentials (base64) that carry one.
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
