package console

import (
	"errors"
	"strings"

	"connectrpc.com/connect"
)

// formErrors are the problems of one form submission: by form field, and
// the rest for the top of the form.
type formErrors struct {
	Fields  map[string]string
	General string
}

func (e *formErrors) any() bool { return e != nil && (len(e.Fields) > 0 || e.General != "") }

func (e *formErrors) set(field, msg string) {
	if e.Fields == nil {
		e.Fields = map[string]string{}
	}
	if prev, ok := e.Fields[field]; ok {
		msg = prev + " " + msg
	}
	e.Fields[field] = msg
}

// apiErrors places an API error at the fields it names. The API's
// invalid_argument message is one "field: problem" line per broken rule
// (aggregate.FieldError, joined); fields maps the API's field names to
// the form's. already_exists belongs to the name field; anything else is
// shown at the top of the form.
func apiErrors(err error, fields map[string]string, nameField string) *formErrors {
	fe := &formErrors{}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		fe.General = "The control plane could not be reached; try again."
		return fe
	}
	switch ce.Code() {
	case connect.CodeInvalidArgument:
		for line := range strings.SplitSeq(ce.Message(), "\n") {
			line = strings.TrimSpace(strings.TrimPrefix(line, "invalid argument: "))
			field, problem, ok := strings.Cut(line, ": ")
			// A list's element is shown at the list: "regions[1]" → regions.
			if i := strings.IndexByte(field, '['); i > 0 {
				field = field[:i]
			}
			if form, known := fields[field]; ok && known {
				if strings.HasPrefix(problem, "is ") || strings.HasPrefix(problem, "has ") || strings.HasPrefix(problem, "must ") {
					problem = "this field " + problem
				}
				fe.set(form, sentence(problem))
			} else if line != "" {
				fe.General = strings.TrimSpace(fe.General + " " + sentence(line))
			}
		}
	case connect.CodeAlreadyExists:
		if nameField != "" {
			fe.set(nameField, "This name is taken in this project; choose another.")
		} else {
			fe.General = sentence(ce.Message())
		}
	case connect.CodeNotFound:
		fe.General = sentence(ce.Message())
		if f, ok := fields["api_keys"]; ok {
			fe.set(f, "A selected key does not exist (any more) in this project.")
			fe.General = ""
		}
	case connect.CodePermissionDenied:
		fe.General = "This admin token may not use this project."
	case connect.CodeUnauthenticated:
		fe.General = "Your admin token is no longer accepted; sign in again."
	default:
		fe.General = sentence(ce.Message())
	}
	return fe
}

// sentence capitalizes a problem and ends it with a full stop.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	if c := s[0]; c >= 'a' && c <= 'z' {
		s = string(c-'a'+'A') + s[1:]
	}
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}
