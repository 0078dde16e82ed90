package authmap

// Reason says why a key is or is not let into a deployment: the finest
// answer the rules give. The audit service reports it; the gateway maps it
// to a Result, which is all a client ever learns.
type Reason uint8

const (
	// ReasonUnknownDeployment: no live deployment of that project and name
	// (or none serving the asked region).
	ReasonUnknownDeployment Reason = iota + 1
	// ReasonAuthDisabled: the deployment does not check keys; allowed.
	ReasonAuthDisabled
	// ReasonMissingKey: the request carried no key.
	ReasonMissingKey
	// ReasonMalformedKey: the key is not a well-formed infergate secret.
	ReasonMalformedKey
	// ReasonUnknownKey: no key of the deployment's project has that secret
	// (or that name).
	ReasonUnknownKey
	// ReasonDeleted: the key was deleted.
	ReasonDeleted
	// ReasonExpired: the key expired before the time asked about.
	ReasonExpired
	// ReasonNotLinked: the key exists but is not linked to the deployment.
	ReasonNotLinked
	// ReasonLinked: the key is linked; allowed.
	ReasonLinked
	// ReasonNotReady: the key would do, but the deployment is not
	// DEPLOYED, so nothing reaches it.
	ReasonNotReady
	// ReasonRotated: the secret is one a rotation replaced, and its grace
	// period ended before the time asked about.
	ReasonRotated
)

var reasonNames = [...]string{
	ReasonUnknownDeployment: "unknown_deployment",
	ReasonAuthDisabled:      "auth_disabled",
	ReasonMissingKey:        "missing_key",
	ReasonMalformedKey:      "malformed_key",
	ReasonUnknownKey:        "unknown_key",
	ReasonDeleted:           "deleted",
	ReasonExpired:           "expired",
	ReasonNotLinked:         "not_linked",
	ReasonLinked:            "linked",
	ReasonNotReady:          "not_ready",
	ReasonRotated:           "rotated",
}

// String is the reason's snake_case name, e.g. "not_linked".
func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "unknown"
}

// Allowed reports whether a request with this reason reaches the upstream.
func (r Reason) Allowed() bool { return r == ReasonLinked || r == ReasonAuthDisabled }

// Result is what the gateway does with a request: the code a client sees.
type Result uint8

const (
	// ResultAllowed: the key is linked; proxy the request.
	ResultAllowed Result = iota + 1
	// ResultAuthDisabled: the deployment does not check keys; proxy it.
	ResultAuthDisabled
	// ResultMissingAPIKey: 401 missing_api_key.
	ResultMissingAPIKey
	// ResultInvalidAPIKey: 401 invalid_api_key (malformed, unknown,
	// deleted, expired, rotated out or not linked; the client is not told
	// which).
	ResultInvalidAPIKey
	// ResultDeploymentNotFound: 404 deployment_not_found.
	ResultDeploymentNotFound
	// ResultDeploymentNotReady: 503 deployment_not_ready.
	ResultDeploymentNotReady

	// NumResults bounds the Result values, for arrays indexed by Result.
	NumResults
)

var resultNames = [...]string{
	ResultAllowed:            "allowed",
	ResultAuthDisabled:       "auth_disabled",
	ResultMissingAPIKey:      "missing_api_key",
	ResultInvalidAPIKey:      "invalid_api_key",
	ResultDeploymentNotFound: "deployment_not_found",
	ResultDeploymentNotReady: "deployment_not_ready",
}

// String is the result's code, e.g. "invalid_api_key".
func (r Result) String() string {
	if int(r) < len(resultNames) && resultNames[r] != "" {
		return resultNames[r]
	}
	return "unknown"
}

// Allowed reports whether the request is proxied.
func (r Result) Allowed() bool { return r == ResultAllowed || r == ResultAuthDisabled }

// Result is what a client is told for the reason.
func (r Reason) Result() Result {
	switch r {
	case ReasonLinked:
		return ResultAllowed
	case ReasonAuthDisabled:
		return ResultAuthDisabled
	case ReasonMissingKey:
		return ResultMissingAPIKey
	case ReasonUnknownDeployment:
		return ResultDeploymentNotFound
	case ReasonNotReady:
		return ResultDeploymentNotReady
	}
	return ResultInvalidAPIKey
}
