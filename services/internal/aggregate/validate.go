package aggregate

import (
	"errors"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"
)

// MaxDescription is the longest description, in characters.
const MaxDescription = 300

// dnsLabel reports whether s matches [a-z0-9]([-a-z0-9]*[a-z0-9])?.
func dnsLabel(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// ValidateProject checks a project name: a DNS label of 1–63 characters.
func ValidateProject(field, v string) error {
	if v == "" {
		return invalid(field, "is required")
	}
	if len(v) > 63 || !dnsLabel(v) {
		return invalid(field, "%q is not a DNS label (1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)", v)
	}
	return nil
}

// ValidateDeploymentName checks a deployment name: a DNS label of 1–63
// characters.
func ValidateDeploymentName(field, v string) error { return ValidateProject(field, v) }

// ValidateKeyName checks a key name: 4–63 characters of a-z, 0-9 and '-',
// starting and ending with a letter or digit.
func ValidateKeyName(field, v string) error {
	if v == "" {
		return invalid(field, "is required")
	}
	if len(v) < 4 || len(v) > 63 || !dnsLabel(v) {
		return invalid(field, "%q is not a valid key name (4-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)", v)
	}
	return nil
}

// ValidateDescription checks a description: valid UTF-8, at most 300
// characters.
func ValidateDescription(field, v string) error {
	if !utf8.ValidString(v) {
		return invalid(field, "is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(v); n > MaxDescription {
		return invalid(field, "has %d characters, at most %d are allowed", n, MaxDescription)
	}
	return nil
}

// ValidateExpiry checks that an expiry, when set, is after now.
func ValidateExpiry(field string, expiresAt *time.Time, now time.Time) error {
	if expiresAt != nil && !expiresAt.After(now) {
		return invalid(field, "%s is not in the future", expiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// ValidateUpstreamURL checks an absolute http or https URL with a host.
func ValidateUpstreamURL(field, v string) error {
	if v == "" {
		return invalid(field, "is required")
	}
	u, err := url.Parse(v)
	if err != nil {
		return invalid(field, "%q is not a URL", v)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalid(field, "%q is not an absolute http(s) URL", v)
	}
	if u.User != nil {
		return invalid(field, "must not carry credentials")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return invalid(field, "must not have a query or fragment")
	}
	return nil
}

// ValidateModel checks a model name: 1–200 printable characters.
func ValidateModel(field, v string) error {
	if v == "" {
		return invalid(field, "is required")
	}
	if len(v) > 200 || !utf8.ValidString(v) {
		return invalid(field, "must be 1-200 characters of valid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return invalid(field, "must not contain control characters")
		}
	}
	return nil
}

// ValidateNames checks a list of names with check, reporting each problem
// with its index.
func ValidateNames(field string, names []string, check func(field, v string) error) error {
	var errs []error
	for i, n := range names {
		if err := check(field+"["+strconv.Itoa(i)+"]", n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
