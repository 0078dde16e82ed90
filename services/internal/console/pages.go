package console

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
)

// inputTime is the layout of a datetime-local input; the console reads
// and shows times in UTC and says so next to every time field.
const inputTime = "2006-01-02T15:04"

// maxListPages bounds how many pages of keys or deployments a page reads.
const maxListPages = 10

// eventTypes are the audit event types, for the Audit page's filter.
var eventTypes = []string{
	"KeyCreated", "KeyUpdated", "KeyExpiryChanged", "KeyDeleted", "KeyRotated", "DeploymentCreated", "DeploymentStatusChanged",
	"DeploymentAuthEnabled", "DeploymentAuthDisabled", "KeyLinked", "KeyUnlinked", "DeploymentDeleted",
}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"has":          slices.Contains[[]string],
		"join":         strings.Join,
		"graceChoices": func() any { return graceChoices },
		"dict": func(kv ...any) (map[string]any, error) {
			if len(kv)%2 != 0 {
				return nil, errors.New("dict: odd arguments")
			}
			m := make(map[string]any, len(kv)/2)
			for i := 0; i < len(kv); i += 2 {
				k, _ := kv[i].(string)
				m[k] = kv[i+1]
			}
			return m, nil
		},
		"fieldError": func(e *formErrors, field string) string {
			if e == nil {
				return ""
			}
			return e.Fields[field]
		},
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"signin", "keys", "deployments", "deployment_new", "deployment", "audit", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

func fmtTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format("2006-01-02 15:04 UTC")
}

// ---- API Keys ----

type keyRow struct {
	Name, Description, Expires, Created, Hint string
	Expired                                   bool
	Deployments                               []string
	// PreviousHint and PreviousUntil name the secret the last rotation
	// replaced while it still works; empty otherwise.
	PreviousHint, PreviousUntil string
}

type keyForm struct {
	Name, Description, ExpiresAt string
	Never                        bool
}

type keysData struct {
	Keys []keyRow
	// Add opens the "Add API Key" dialog with Form.
	Add  bool
	Form keyForm
	// Created is the key just made, with its secret, shown this once.
	Created *struct{ Name, Secret string }
	// Edit, Delete and Rotate open their dialogs for one key.
	Edit, Delete, Rotate *keyRow
	EditDesc             string
	// Rotated is the rotation just made, with the new secret, shown this
	// once.
	Rotated *rotatedKey
}

type rotatedKey struct {
	Name, Secret, OldHint, OldUntil, Receipt string
	// AtOnce: the old secret stopped at once.
	AtOnce bool
}

// graceChoices are the Rotate dialog's grace periods; 24 hours is the
// API's default.
var graceChoices = []struct{ Value, Label string }{
	{"0s", "Stops at once"}, {"1h", "1 hour"}, {"24h", "24 hours"}, {"168h", "7 days"}, {"720h", "30 days"},
}

func (c *Console) listKeys(r *http.Request, s *session) ([]*keyv1.Key, error) {
	cx, cancel := ctx(r)
	defer cancel()
	var all []*keyv1.Key
	token := ""
	for range maxListPages {
		res, err := c.keys.ListKeys(cx, auth(s, &keyv1.ListKeysRequest{Project: r.PathValue("project"), PageSize: 1000, PageToken: token}))
		if err != nil {
			return nil, err
		}
		all = append(all, res.Msg.GetKeys()...)
		if token = res.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	return all, nil
}

func keyRows(keys []*keyv1.Key) []keyRow {
	now := time.Now()
	rows := make([]keyRow, 0, len(keys))
	for _, k := range keys {
		row := keyRow{
			Name: k.GetName(), Description: k.GetDescription(), Created: fmtTime(k.GetCreatedAt()),
			Hint: k.GetHint(), Deployments: k.GetDeploymentNames(), Expires: "Never",
		}
		if k.GetExpiresAt() != nil {
			row.Expires = fmtTime(k.GetExpiresAt())
			row.Expired = !k.GetExpiresAt().AsTime().After(now)
		}
		if until := k.GetPreviousSecretNotAfter(); until != nil && until.AsTime().After(now) {
			row.PreviousHint, row.PreviousUntil = k.GetPreviousHint(), fmtTime(until)
		}
		rows = append(rows, row)
	}
	return rows
}

// keysView renders the API Keys page around data, reading the keys anew.
func (c *Console) keysView(w http.ResponseWriter, r *http.Request, s *session, status int, v *view, data *keysData) {
	keys, err := c.listKeys(r, s)
	if err != nil {
		c.fail(w, r, s, "keys", err)
		return
	}
	data.Keys = keyRows(keys)
	v.Data = data
	v.URL = projectURL(r.PathValue("project"), "keys")
	c.render(w, status, "keys", v)
}

func (c *Console) keysPage(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	data := &keysData{Add: q.Get("add") != "", Form: keyForm{Never: true}}
	v := c.view(s, r, "API Keys", "keys")
	keys, err := c.listKeys(r, s)
	if err != nil {
		c.fail(w, r, s, "keys", err)
		return
	}
	data.Keys = keyRows(keys)
	for i := range data.Keys {
		switch data.Keys[i].Name {
		case q.Get("edit"):
			data.Edit = &data.Keys[i]
			data.EditDesc = data.Keys[i].Description
		case q.Get("delete"):
			data.Delete = &data.Keys[i]
		case q.Get("rotate"):
			data.Rotate = &data.Keys[i]
		}
	}
	if q.Get("updated") != "" {
		v.Notice = "Description of “" + q.Get("updated") + "” saved."
	}
	v.Data = data
	c.render(w, http.StatusOK, "keys", v)
}

func (c *Console) createKey(w http.ResponseWriter, r *http.Request, s *session) {
	form := keyForm{
		Name:        strings.TrimSpace(r.PostFormValue("name")),
		Description: r.PostFormValue("description"),
		ExpiresAt:   r.PostFormValue("expires_at"),
		Never:       r.PostFormValue("never") != "",
	}
	v := c.view(s, r, "API Keys", "keys")
	data := &keysData{Add: true, Form: form}
	req := &keyv1.CreateKeyRequest{Project: r.PathValue("project"), Name: form.Name, Description: form.Description}
	if !form.Never {
		t, err := time.ParseInLocation(inputTime, form.ExpiresAt, time.UTC)
		if err != nil {
			v.Errors.set("expires_at", "Choose a date and time (UTC), or Never expire.")
			c.keysView(w, r, s, http.StatusBadRequest, v, data)
			return
		}
		req.ExpiresAt = timestamppb.New(t)
	}
	cx, cancel := ctx(r)
	defer cancel()
	res, err := c.keys.CreateKey(cx, auth(s, req))
	if err != nil {
		v.Errors = apiErrors(err, map[string]string{"name": "name", "description": "description", "expires_at": "expires_at"}, "name")
		c.keysView(w, r, s, statusOf(err), v, data)
		return
	}
	data = &keysData{Form: keyForm{Never: true}, Created: &struct{ Name, Secret string }{res.Msg.GetKey().GetName(), res.Msg.GetSecret()}}
	v.Notice = "API key “" + res.Msg.GetKey().GetName() + "” created."
	c.keysView(w, r, s, http.StatusOK, v, data)
}

func (c *Console) updateKey(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	desc := r.PostFormValue("description")
	cx, cancel := ctx(r)
	defer cancel()
	_, err := c.keys.UpdateKey(cx, auth(s, &keyv1.UpdateKeyRequest{Project: r.PathValue("project"), Name: name, Description: &desc}))
	if err != nil {
		v := c.view(s, r, "API Keys", "keys")
		v.Errors = apiErrors(err, map[string]string{"description": "edit_description"}, "")
		data := &keysData{EditDesc: desc}
		keys, lerr := c.listKeys(r, s)
		if lerr != nil {
			c.fail(w, r, s, "keys", lerr)
			return
		}
		data.Keys = keyRows(keys)
		for i := range data.Keys {
			if data.Keys[i].Name == name {
				data.Edit = &data.Keys[i]
			}
		}
		v.Data = data
		v.URL = projectURL(r.PathValue("project"), "keys")
		c.render(w, statusOf(err), "keys", v)
		return
	}
	http.Redirect(w, r, projectURL(r.PathValue("project"), "keys")+"?updated="+url.QueryEscape(name), http.StatusSeeOther)
}

// deleteKey deletes a key and answers with the API Keys page and the
// receipt: when every gateway has applied it, the key is refused
// everywhere.
func (c *Console) deleteKey(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	cx, cancel := ctx(r)
	defer cancel()
	res, err := c.keys.DeleteKey(cx, auth(s, &keyv1.DeleteKeyRequest{Project: r.PathValue("project"), Name: name}))
	if err != nil {
		c.fail(w, r, s, "keys", err)
		return
	}
	v := c.view(s, r, "API Keys", "keys")
	v.Notice = "API key “" + name + "” deleted. " + receiptOf(res.Msg.GetPropagation()).Summary
	c.keysView(w, r, s, http.StatusOK, v, &keysData{Form: keyForm{Never: true}})
}

// rotateKey gives a key a new secret and answers with the API Keys page,
// the new secret shown this once, when the old one stops, and the
// receipt.
func (c *Console) rotateKey(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	v := c.view(s, r, "API Keys", "keys")
	grace, err := time.ParseDuration(r.PostFormValue("grace"))
	if err != nil {
		c.fail(w, r, s, "keys", connect.NewError(connect.CodeInvalidArgument, errors.New("grace_period: is not a duration")))
		return
	}
	cx, cancel := ctx(r)
	defer cancel()
	res, err := c.keys.RotateKey(cx, auth(s, &keyv1.RotateKeyRequest{Project: r.PathValue("project"), Name: name, GracePeriod: durationpb.New(grace)}))
	if err != nil {
		c.fail(w, r, s, "keys", err)
		return
	}
	m := res.Msg
	rk := &rotatedKey{
		Name: name, Secret: m.GetSecret(), OldHint: m.GetKey().GetPreviousHint(),
		OldUntil: fmtTime(m.GetOldSecretNotAfter()), Receipt: receiptOf(m.GetPropagation()).Summary,
		AtOnce: !m.GetOldSecretNotAfter().AsTime().After(m.GetKey().GetRotatedAt().AsTime()),
	}
	v.Notice = "API key “" + name + "” rotated."
	c.keysView(w, r, s, http.StatusOK, v, &keysData{Form: keyForm{Never: true}, Rotated: rk})
}

// ---- Deployments ----

type deploymentRow struct {
	Name, Model, Status, StatusClass, StatusReason, Regions, Endpoint, Created, Upstream string
	Auth                                                                                 bool
	Keys                                                                                 []string
}

func deploymentRowOf(d *deploymentv1.Deployment) deploymentRow {
	row := deploymentRow{
		Name: d.GetName(), Model: d.GetModel(), StatusReason: d.GetStatusReason(), Endpoint: d.GetEndpointUrl(),
		Auth: d.GetAuthEnabled(), Keys: d.GetApiKeys(), Regions: strings.Join(d.GetRegions(), ", "),
		Created: fmtTime(d.GetCreatedAt()), Upstream: d.GetUpstreamUrl(),
	}
	if row.Regions == "" {
		row.Regions = "All regions"
	}
	switch d.GetStatus() {
	case deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED:
		row.Status, row.StatusClass = "Deployed", "deployed"
	case deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED:
		row.Status, row.StatusClass = "Failed", "failed"
	default:
		row.Status, row.StatusClass = "Deploying", "deploying"
	}
	return row
}

type deploymentsData struct {
	Rows []deploymentRow
}

func (c *Console) deploymentsPage(w http.ResponseWriter, r *http.Request, s *session) {
	cx, cancel := ctx(r)
	defer cancel()
	var rows []deploymentRow
	token := ""
	for range maxListPages {
		res, err := c.deployments.ListDeployments(cx, auth(s, &deploymentv1.ListDeploymentsRequest{Project: r.PathValue("project"), PageSize: 1000, PageToken: token}))
		if err != nil {
			c.fail(w, r, s, "deployments", err)
			return
		}
		for _, d := range res.Msg.GetDeployments() {
			rows = append(rows, deploymentRowOf(d))
		}
		if token = res.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	v := c.view(s, r, "Deployments", "deployments")
	v.Data = &deploymentsData{Rows: rows}
	if name := r.URL.Query().Get("created"); name != "" {
		v.Notice = "Deployment “" + name + "” created. Its status changes to Deployed once the upstream answers."
	}
	if r.URL.Query().Get("rows") != "" {
		// The table's rows alone, for the script that keeps statuses live.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := c.pages["deployments"].ExecuteTemplate(w, "rows", v); err != nil {
			c.log.Error("console: render rows", "err", err)
		}
		return
	}
	c.render(w, http.StatusOK, "deployments", v)
}

type deploymentForm struct {
	Name, Model, UpstreamURL, Regions string
	Auth                              bool
	Keys                              []string
}

type newDeploymentData struct {
	Form    deploymentForm
	AllKeys []keyRow
}

func (c *Console) newDeploymentView(w http.ResponseWriter, r *http.Request, s *session, status int, v *view, form deploymentForm) {
	keys, err := c.listKeys(r, s)
	if err != nil {
		c.fail(w, r, s, "deployments", err)
		return
	}
	v.Data = &newDeploymentData{Form: form, AllKeys: keyRows(keys)}
	if r.Method == http.MethodPost {
		v.URL = projectURL(r.PathValue("project"), "deployments/new")
	}
	c.render(w, status, "deployment_new", v)
}

func (c *Console) newDeploymentPage(w http.ResponseWriter, r *http.Request, s *session) {
	c.newDeploymentView(w, r, s, http.StatusOK, c.view(s, r, "Create deployment", "deployments"), deploymentForm{})
}

func splitList(s string) []string {
	var out []string
	for f := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, f)
	}
	return out
}

func (c *Console) createDeployment(w http.ResponseWriter, r *http.Request, s *session) {
	_ = r.ParseForm()
	form := deploymentForm{
		Name:        strings.TrimSpace(r.PostFormValue("name")),
		Model:       strings.TrimSpace(r.PostFormValue("model")),
		UpstreamURL: strings.TrimSpace(r.PostFormValue("upstream_url")),
		Regions:     r.PostFormValue("regions"),
		Auth:        r.PostFormValue("auth_enabled") != "",
		Keys:        r.PostForm["api_keys"],
	}
	req := &deploymentv1.CreateDeploymentRequest{
		Project: r.PathValue("project"), Name: form.Name, Model: form.Model, UpstreamUrl: form.UpstreamURL,
		Regions: splitList(form.Regions), AuthEnabled: form.Auth,
	}
	if form.Auth {
		// Keys are linked only with authentication on, as in the portal:
		// the list is hidden while the toggle is off.
		req.ApiKeys = form.Keys
	}
	cx, cancel := ctx(r)
	defer cancel()
	if _, err := c.deployments.CreateDeployment(cx, auth(s, req)); err != nil {
		v := c.view(s, r, "Create deployment", "deployments")
		v.Errors = apiErrors(err, map[string]string{
			"name": "name", "model": "model", "upstream_url": "upstream_url", "regions": "regions", "api_keys": "api_keys",
		}, "name")
		c.newDeploymentView(w, r, s, statusOf(err), v, form)
		return
	}
	http.Redirect(w, r, projectURL(r.PathValue("project"), "deployments")+"?created="+url.QueryEscape(form.Name), http.StatusSeeOther)
}

// ---- Deployment detail ----

type deploymentData struct {
	D       deploymentRow
	Tab     string
	AllKeys []keyRow
	// Receipt is the propagation receipt of the last "Save changes".
	Receipt *receipt
	// Snippets for the Code examples tab.
	Snippets []snippet
	// History of the deployment.
	Events []eventRow
	// Check access.
	CheckKey, CheckAt string
	// CheckHint picks one of the key's secrets (current or rotated out)
	// by its hint; empty: the current one.
	CheckHint string
	Check     *checkResult
}

type snippet struct{ ID, Title, Code string }

type checkResult struct {
	Allowed  bool
	Reason   string
	Sequence uint64
}

type eventRow struct {
	Sequence                            uint64
	Time, Actor, Type, Subject, Summary string
}

func (c *Console) deploymentView(w http.ResponseWriter, r *http.Request, s *session, status int, v *view, data *deploymentData) {
	project, name := r.PathValue("project"), r.PathValue("name")
	cx, cancel := ctx(r)
	defer cancel()
	res, err := c.deployments.GetDeployment(cx, auth(s, &deploymentv1.GetDeploymentRequest{Project: project, Name: name}))
	if err != nil {
		c.fail(w, r, s, "deployments", err)
		return
	}
	d := res.Msg.GetDeployment()
	data.D = deploymentRowOf(d)
	v.Title = d.GetName()
	switch data.Tab {
	case "code":
		data.Snippets = snippets(d)
	case "history":
		ev, err := c.audit.ListEvents(cx, auth(s, &auditv1.ListEventsRequest{Project: project, Deployment: name, PageSize: 200}))
		if err != nil {
			c.fail(w, r, s, "deployments", err)
			return
		}
		data.Events = eventRows(ev.Msg.GetEvents())
	case "check":
		keys, err := c.listKeys(r, s)
		if err != nil {
			c.fail(w, r, s, "deployments", err)
			return
		}
		data.AllKeys = keyRows(keys)
		if data.CheckKey != "" {
			c.checkAccess(r, s, v, data)
		}
	default:
		data.Tab = "auth"
		if data.AllKeys == nil {
			keys, err := c.listKeys(r, s)
			if err != nil {
				c.fail(w, r, s, "deployments", err)
				return
			}
			data.AllKeys = keyRows(keys)
		}
	}
	v.Data = data
	if r.Method == http.MethodPost {
		v.URL = projectURL(project, "deployments/"+name)
	}
	c.render(w, status, "deployment", v)
}

func (c *Console) checkAccess(r *http.Request, s *session, v *view, data *deploymentData) {
	at := time.Now()
	if data.CheckAt != "" {
		t, err := time.ParseInLocation(inputTime, data.CheckAt, time.UTC)
		if err != nil {
			v.Errors.set("at", "Choose a date and time (UTC).")
			return
		}
		at = t
	}
	cx, cancel := ctx(r)
	defer cancel()
	res, err := c.audit.CheckAccess(cx, auth(s, &auditv1.CheckAccessRequest{
		Project: r.PathValue("project"), Deployment: r.PathValue("name"), Key: data.CheckKey, At: timestamppb.New(at),
		SecretHint: data.CheckHint,
	}))
	if err != nil {
		v.Errors = apiErrors(err, map[string]string{"key": "key", "at": "at", "secret_hint": "secret_hint"}, "")
		return
	}
	data.Check = &checkResult{Allowed: res.Msg.GetAllowed(), Reason: res.Msg.GetReason(), Sequence: res.Msg.GetSequence()}
}

func (c *Console) deploymentPage(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	data := &deploymentData{Tab: q.Get("tab"), CheckKey: strings.TrimSpace(q.Get("key")), CheckAt: q.Get("at"),
		CheckHint: strings.TrimSpace(q.Get("secret_hint"))}
	c.deploymentView(w, r, s, http.StatusOK, c.view(s, r, "Deployment", "deployments"), data)
}

// saveAuth is "Save changes": one UpdateDeploymentAuth call with the
// toggle and the whole set of keys, then the page with its receipt.
func (c *Console) saveAuth(w http.ResponseWriter, r *http.Request, s *session) {
	_ = r.ParseForm()
	v := c.view(s, r, "Deployment", "deployments")
	data := &deploymentData{Tab: "auth"}
	cx, cancel := ctx(r)
	defer cancel()
	res, err := c.deployments.UpdateDeploymentAuth(cx, auth(s, &deploymentv1.UpdateDeploymentAuthRequest{
		Project: r.PathValue("project"), Name: r.PathValue("name"),
		AuthEnabled: r.PostFormValue("auth_enabled") != "", ApiKeys: r.PostForm["api_keys"],
	}))
	status := http.StatusOK
	if err != nil {
		if isCode(err, connect.CodePermissionDenied) {
			c.fail(w, r, s, "deployments", err)
			return
		}
		v.Errors = apiErrors(err, map[string]string{"api_keys": "api_keys"}, "")
		status = statusOf(err)
	} else {
		data.Receipt = receiptOf(res.Msg.GetPropagation())
		v.Notice = "Changes saved."
	}
	c.deploymentView(w, r, s, status, v, data)
}

// receipt is the propagation receipt, in words.
type receipt struct {
	Confirmed bool
	Summary   string
	Lagging   []string
}

func receiptOf(p *propagationv1.Propagation) *receipt {
	rc := &receipt{Confirmed: p.GetConfirmed()}
	waited := fmtDuration(p.GetWaited().AsDuration())
	switch {
	case p.GetGateways() == 0:
		rc.Summary = fmt.Sprintf("Saved at stream sequence %d. No gateway serves this deployment's regions right now; each one applies it when it starts.", p.GetSequence())
	case p.GetConfirmed():
		rc.Summary = fmt.Sprintf("Applied at %d/%d gateways in %s.", p.GetGatewaysApplied(), p.GetGateways(), waited)
		if p.GetGatewaysApplied() < p.GetGateways() {
			rc.Summary += " The others refuse requests as stale until they catch up."
		}
	default:
		rc.Summary = fmt.Sprintf("Applied at %d/%d gateways after %s; not yet confirmed everywhere.", p.GetGatewaysApplied(), p.GetGateways(), waited)
	}
	for _, g := range p.GetLagging() {
		line := fmt.Sprintf("%s (region %s): applied up to #%d of #%d", g.GetId(), g.GetRegion(), g.GetAppliedSequence(), p.GetSequence())
		if g.GetLastHeard() != nil {
			line += ", last heard " + fmtDuration(time.Since(g.GetLastHeard().AsTime()).Round(time.Millisecond)) + " ago"
		}
		if g.GetRefusingAsStale() {
			line += ", refusing requests as stale"
		}
		if g.GetOtherStream() != "" {
			line += ", on another stream (" + g.GetOtherStream() + ")"
		}
		rc.Lagging = append(rc.Lagging, line)
	}
	return rc
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// snippets are the document's ready-to-paste examples for one endpoint.
func snippets(d *deploymentv1.Deployment) []snippet {
	endpoint, model := d.GetEndpointUrl(), d.GetModel()
	keyLine := ""
	if d.GetAuthEnabled() {
		keyLine = "\n  -H \"X-API-Key: ${API_KEY}\" \\"
	}
	curl := fmt.Sprintf(`ENDPOINT_URL=%q
API_KEY="<api-key>"
MODEL=%q

curl "${ENDPOINT_URL}/v1/chat/completions" \
  -H "Content-Type: application/json" \%s
  -d '{
    "model": "'"${MODEL}"'",
    "messages": [{"role": "user", "content": "Explain gradient descent in two sentences."}]
  }'`, endpoint, model, keyLine)
	python := fmt.Sprintf(`from openai import OpenAI

ENDPOINT_URL = %q
API_KEY = "<api-key>"
MODEL = %q

client = OpenAI(
    base_url=f"{ENDPOINT_URL}/v1",
    api_key="unused",
)

response = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Explain gradient descent in two sentences."}],
    extra_headers={"X-API-Key": API_KEY},
)

print(response.choices[0].message.content)`, endpoint, model)
	js := fmt.Sprintf(`const ENDPOINT_URL = %q;
const API_KEY = "<api-key>";
const MODEL = %q;

const response = await fetch(`+"`${ENDPOINT_URL}/v1/chat/completions`"+`, {
  method: "POST",
  headers: {
    "Content-Type": "application/json",
    "X-API-Key": API_KEY,
  },
  body: JSON.stringify({
    model: MODEL,
    messages: [{ role: "user", content: "Explain gradient descent in two sentences." }],
  }),
});

const data = await response.json();
console.log(data.choices[0].message.content);`, endpoint, model)
	return []snippet{{"curl", "curl", curl}, {"python", "Python", python}, {"javascript", "JavaScript", js}}
}

// ---- Audit ----

type auditData struct {
	Key, Deployment, Type, Since, Until string
	Types                               []string
	Events                              []eventRow
	Next                                string
}

func eventRows(events []*auditv1.Event) []eventRow {
	rows := make([]eventRow, 0, len(events))
	for _, e := range events {
		rows = append(rows, eventRow{
			Sequence: e.GetSequence(), Time: e.GetTime().AsTime().UTC().Format("2006-01-02 15:04:05 UTC"),
			Actor: e.GetActor(), Type: e.GetType(), Subject: e.GetAggregateName(), Summary: e.GetSummary(),
		})
	}
	return rows
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	data := &auditData{
		Key: strings.TrimSpace(q.Get("key")), Deployment: strings.TrimSpace(q.Get("deployment")),
		Type: q.Get("type"), Since: q.Get("since"), Until: q.Get("until"), Types: eventTypes,
	}
	v := c.view(s, r, "Audit", "audit")
	v.Data = data
	req := &auditv1.ListEventsRequest{
		Project: r.PathValue("project"), Key: data.Key, Deployment: data.Deployment, PageSize: 100, PageToken: q.Get("page_token"),
	}
	if data.Type != "" {
		req.Types = []string{data.Type}
	}
	for field, in := range map[string]struct {
		val string
		dst **timestamppb.Timestamp
	}{"since": {data.Since, &req.Since}, "until": {data.Until, &req.Until}} {
		if in.val == "" {
			continue
		}
		t, err := time.ParseInLocation(inputTime, in.val, time.UTC)
		if err != nil {
			v.Errors.set(field, "Choose a date and time (UTC).")
			continue
		}
		*in.dst = timestamppb.New(t)
	}
	if v.Errors.any() {
		c.render(w, http.StatusBadRequest, "audit", v)
		return
	}
	cx, cancel := ctx(r)
	defer cancel()
	res, err := c.audit.ListEvents(cx, auth(s, req))
	if err != nil {
		if isCode(err, connect.CodePermissionDenied) || !isCode(err, connect.CodeInvalidArgument) {
			c.fail(w, r, s, "audit", err)
			return
		}
		v.Errors = apiErrors(err, map[string]string{"key": "key", "deployment": "deployment", "since": "since", "until": "until", "types": "type"}, "")
		c.render(w, http.StatusBadRequest, "audit", v)
		return
	}
	data.Events = eventRows(res.Msg.GetEvents())
	if next := res.Msg.GetNextPageToken(); next != "" {
		nq := url.Values{}
		for _, k := range []string{"key", "deployment", "type", "since", "until"} {
			if q.Get(k) != "" {
				nq.Set(k, q.Get(k))
			}
		}
		nq.Set("page_token", next)
		data.Next = "?" + nq.Encode()
	}
	c.render(w, http.StatusOK, "audit", v)
}

// statusOf is the HTTP status of a form answered with an API error.
func statusOf(err error) int {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument:
		return http.StatusBadRequest
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusBadGateway
}
