// Package fakeneutron is an in-memory Neutron API stand-in for unit tests and the demo. It
// implements the subset the neutron adapter uses, with the semantics the real neutron-server
// showed (checked by the contract suite in package neutron, which runs against both):
//   - ports: atomic bulk create, tags in create bodies (tag-ports-during-bulk-creation), MAC and IP
//     allocation, list filters with limit/marker pagination and links, If-Match updates (412),
//     revision numbers, 409 when deleting a subport;
//   - trunks: add_subports / remove_subports all or nothing (409 on a VLAN clash or a port that is
//     already a subport, 404 for a port that is not a subport), trunk_details on parent ports;
//   - networks, subnets, security groups, extensions;
//   - subnet pools with prefix allocation (lowest free prefix), tags on networks and subnets, and
//     routers with add/remove_router_interface when the "router" extension is switched on
//     (SetExtension; the test server has no L3 plugin, so it is off by default, as there).
//
// Like the test server (no L2 agent), a port bound to a host fails its binding
// (binding:vif_type binding_failed) unless the host was declared with AddAgentHost.
package fakeneutron

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Server is the stand-in. Its zero value is not usable: call New.
type Server struct {
	mu       sync.Mutex
	networks map[string]*network
	subnets  map[string]*subnet
	ports    map[string]*port
	trunks   map[string]*trunk
	sgs      map[string]*secGroup
	pools    map[string]*subnetPool // subnetpools.go
	routers  map[string]*router     // routers.go
	// portQuota: per-project port quotas (quotas.go); a project without one is unlimited.
	portQuota map[string]int
	macSeq    uint32
	ext       map[string]bool
	agents    map[string]bool // hosts with an "L2 agent": bindings succeed there
	faults    []*fault
	requests  map[string]int // "METHOD /v2.0/<resource>" -> count
	now       func() time.Time

	// RewriteSubportOwner makes add_subports set device_owner trunk:subport on the ports, as
	// ML2/OVS does once an agent binds the trunk. Off by default: the test server (no agent)
	// leaves the owner alone.
	RewriteSubportOwner bool

	srv *http.Server
	url string
}

// New returns an empty stand-in with the extensions of Debian's Zed neutron-server as configured
// by hack/neutron-up.sh.
func New() *Server {
	s := &Server{
		networks:  map[string]*network{},
		portQuota: map[string]int{},
		subnets:   map[string]*subnet{},
		ports:     map[string]*port{},
		trunks:    map[string]*trunk{},
		sgs:       map[string]*secGroup{},
		pools:     map[string]*subnetPool{},
		routers:   map[string]*router{},
		agents:    map[string]bool{},
		requests:  map[string]int{},
		now:       func() time.Time { return time.Now().UTC() },
		ext:       map[string]bool{},
	}
	for _, a := range []string{"binding", "binding-extended", "external-net", "net-mtu", "pagination",
		"port-security", "project-id", "revision-if-match", "security-group", "sorting",
		"standard-attr-revisions", "standard-attr-tag", "standard-attr-timestamp",
		"tag-ports-during-bulk-creation", "trunk", "trunk-details", "filter-validation"} {
		s.ext[a] = true
	}
	return s
}

// Start serves on 127.0.0.1 on a free port and returns the endpoint URL ("http://127.0.0.1:N/").
func (s *Server) Start() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("fakeneutron: listen: %w", err)
	}
	s.mu.Lock()
	s.url = "http://" + l.Addr().String() + "/"
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.mu.Unlock()
	go func() { _ = s.srv.Serve(l) }()
	return s.url, nil
}

// URL is the endpoint of a started server ("" before Start).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Close stops a started server.
func (s *Server) Close() {
	if s.srv != nil {
		_ = s.srv.Close()
	}
}

// AddAgentHost declares an L2 agent on host: ports bound there get binding:vif_type ovs.
func (s *Server) AddAgentHost(host string) {
	s.mu.Lock()
	s.agents[host] = true
	s.mu.Unlock()
}

// SetExtension adds or removes an API extension; without tag-ports-during-bulk-creation the
// server ignores tags in create bodies, as Neutron does.
func (s *Server) SetExtension(alias string, on bool) {
	s.mu.Lock()
	s.ext[alias] = on
	s.mu.Unlock()
}

// fault is an injected failure: the next count requests matching method and path prefix are
// answered with status.
type fault struct {
	method, prefix string
	status, count  int
	retryAfter     string
	after          bool // serve the request, then answer the fault: the answer is lost
}

// FailNext answers the next count requests whose method is method ("" for any) and whose path
// starts with pathPrefix (e.g. "/v2.0/trunks") with status and a NeutronError body, without
// touching any state.
func (s *Server) FailNext(method, pathPrefix string, status, count int) {
	s.mu.Lock()
	s.faults = append(s.faults, &fault{method: method, prefix: pathPrefix, status: status, count: count})
	s.mu.Unlock()
}

// FailAfterNext serves the next count matching requests normally (state changes happen) and
// then answers status instead of the real answer: a proxy error or a lost response.
func (s *Server) FailAfterNext(method, pathPrefix string, status, count int) {
	s.mu.Lock()
	s.faults = append(s.faults, &fault{method: method, prefix: pathPrefix, status: status, count: count, after: true})
	s.mu.Unlock()
}

// ThrottleNext answers the next count matching requests with 429 and a Retry-After of seconds.
func (s *Server) ThrottleNext(method, pathPrefix string, seconds, count int) {
	s.mu.Lock()
	s.faults = append(s.faults, &fault{method: method, prefix: pathPrefix, status: http.StatusTooManyRequests,
		count: count, retryAfter: fmt.Sprint(seconds)})
	s.mu.Unlock()
}

// Requests returns how many requests were served per "METHOD /v2.0/<resource>" (faults included).
func (s *Server) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

// apiErr is a Neutron error answer.
type apiErr struct {
	status int
	typ    string
	msg    string
}

func (e *apiErr) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.typ, e.msg) }

func errf(status int, typ, format string, a ...any) *apiErr {
	return &apiErr{status: status, typ: typ, msg: fmt.Sprintf(format, a...)}
}

func notFound(typ, format string, a ...any) *apiErr {
	return errf(http.StatusNotFound, typ, format, a...)
}

func badRequest(format string, a ...any) *apiErr {
	return errf(http.StatusBadRequest, "InvalidInput", "Invalid input for operation: "+format, a...)
}

func conflict(typ, format string, a ...any) *apiErr {
	return errf(http.StatusConflict, typ, format, a...)
}

// ServeHTTP routes /v2.0/... requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if path == "" && r.Method == http.MethodGet { // version discovery, as gophercloud does it
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"versions": []any{map[string]any{"id": "v2.0", "status": "CURRENT",
			"links": []any{map[string]string{"rel": "self", "href": s.baseURL(r)}}}}})
		return
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) < 2 || parts[0] != "v2.0" {
		writeErr(w, notFound("HTTPNotFound", "The resource could not be found."))
		return
	}
	res := strings.TrimSuffix(parts[1], ".json")
	s.mu.Lock()
	s.requests[r.Method+" /v2.0/"+res]++
	f := s.takeFault(r.Method, path)
	if f != nil && !f.after {
		s.mu.Unlock()
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		writeErr(w, errf(f.status, "InjectedFault", "fakeneutron: injected %d for %s %s", f.status, r.Method, path))
		return
	}
	s.mu.Unlock()

	project := r.Header.Get("X-Project-Id")
	var body map[string]json.RawMessage
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		raw, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err == nil && len(raw) > 0 {
			err = json.Unmarshal(raw, &body)
		}
		if err != nil {
			writeErr(w, errf(http.StatusBadRequest, "HTTPBadRequest", "Malformed request body: %v", err))
			return
		}
	}
	req := &request{r: r, project: project, body: body, parts: parts[1:], base: s.baseURL(r)}
	status, out, err := s.route(req)
	if f != nil { // f.after: the work is done, the answer is replaced
		writeErr(w, errf(f.status, "InjectedFault", "fakeneutron: injected %d after serving %s %s", f.status, r.Method, path))
		return
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	if out == nil {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) baseURL(r *http.Request) string {
	return "http://" + r.Host + "/v2.0/"
}

// takeFault returns and consumes the first fault matching the request; s.mu is held.
func (s *Server) takeFault(method, path string) *fault {
	for i, f := range s.faults {
		if (f.method == "" || f.method == method) && strings.HasPrefix(path, f.prefix) {
			f.count--
			if f.count <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

type request struct {
	r       *http.Request
	project string
	body    map[string]json.RawMessage
	parts   []string // after "v2.0": resource, id, sub-resource...
	base    string
}

func (s *Server) route(q *request) (int, any, error) {
	m, p := q.r.Method, q.parts
	res := strings.TrimSuffix(p[0], ".json")
	switch {
	case res == "extensions" && m == http.MethodGet && len(p) == 1:
		return s.listExtensions()
	case res == "ports":
		return s.routePorts(q)
	case res == "trunks":
		return s.routeTrunks(q)
	case (res == "networks" || res == "subnets") && len(p) >= 3 && p[2] == "tags":
		return s.routeResourceTags(q)
	case res == "networks":
		return s.routeNetworks(q)
	case res == "subnets":
		return s.routeSubnets(q)
	case res == "security-groups":
		return s.routeSecurityGroups(q)
	case res == "subnetpools":
		return s.routeSubnetPools(q)
	case res == "quotas":
		return s.routeQuotas(q)
	case res == "routers" && s.hasExtension("router"):
		return s.routeRouters(q)
	}
	return 0, nil, notFound("HTTPNotFound", "The resource could not be found.")
}

func (s *Server) listExtensions() (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for a, on := range s.ext {
		if on {
			out = append(out, map[string]any{"alias": a, "name": a, "description": "", "updated": "", "links": []any{}})
		}
	}
	return http.StatusOK, map[string]any{"extensions": out}, nil
}

func writeErr(w http.ResponseWriter, err error) {
	var ae *apiErr
	if !errors.As(err, &ae) {
		ae = errf(http.StatusInternalServerError, "HTTPInternalServerError", "%v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"NeutronError": map[string]string{
		"type": ae.typ, "message": ae.msg, "detail": ""}})
}

// decode reads the JSON value of key in the body into v.
func decode(body map[string]json.RawMessage, key string, v any) error {
	raw, ok := body[key]
	if !ok {
		return badRequest("Resource body required: %q", key)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return badRequest("%s: %v", key, err)
	}
	return nil
}
