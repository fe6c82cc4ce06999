package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/pool"
)

// maxManageBody bounds a management request: the largest sane one is a list of trunk IPs.
const maxManageBody = 64 << 10

// PoolAdmin is what the management API needs from the node's pool driver.
type PoolAdmin interface {
	Node() string
	Populate(ctx context.Context, key pool.Key, n int, force bool) (created, capped int, err error)
	Free(ctx context.Context, key pool.Key) (deleted int, err error)
	Keys() []pool.Key
	Stats(key pool.Key) pool.Stats
	FreePorts(key pool.Key) []pool.Port
}

// ManageServer serves kuryr's pool manager API for this node's pools.
type ManageServer struct {
	Admin PoolAdmin
	// DefaultPool is the pool populatePool fills: the node's pool on the default project and
	// subnet network ([neutron_defaults]).
	DefaultPool func(ctx context.Context) (pool.Key, error)
	// Max is ports_pool_max, for messages.
	Max    int
	Policy SocketPolicy
}

type manageAnswer struct {
	status int
	manage.Answer
}

func answer(status int, msg string) *manageAnswer {
	return &manageAnswer{status: status, Answer: manage.Answer{Message: msg}}
}

func (a *manageAnswer) withErr(err error) *manageAnswer {
	if err != nil {
		a.Error = err.Error()
	}
	return a
}

// Handler returns the HTTP handler of the management socket.
func (m *ManageServer) Handler(ctx context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log := klog.FromContext(ctx).WithValues("path", r.URL.Path, "method", r.Method)
		ans := m.route(klog.NewContext(context.WithoutCancel(r.Context()), log), r)
		if ans.status >= 400 {
			log.Info("management request refused", "status", ans.status, "message", ans.Message, "error", ans.Error)
		} else {
			log.Info("management request done", "message", ans.Message)
		}
		writeManage(w, r, ans)
	})
}

func writeManage(w http.ResponseWriter, r *http.Request, ans *manageAnswer) {
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ans.status)
		_ = json.NewEncoder(w).Encode(ans.Answer)
		return
	}
	body := ans.Message
	if ans.Error != "" {
		body += "\n" + ans.Error
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(ans.status)
	_, _ = io.WriteString(w, body)
}

func (m *ManageServer) route(ctx context.Context, r *http.Request) *manageAnswer {
	if err := m.Policy.authorize(r.Context()); err != nil {
		return answer(http.StatusForbidden, err.Error())
	}
	// kuryr matched paths with endswith(), so "http://localhost/listPools" style targets work.
	type endpoint struct {
		method string
		fn     func(context.Context, []byte) *manageAnswer
	}
	var ep endpoint
	switch {
	case strings.HasSuffix(r.URL.Path, manage.PathPopulate):
		ep = endpoint{http.MethodPost, m.populate}
	case strings.HasSuffix(r.URL.Path, manage.PathFree):
		ep = endpoint{http.MethodPost, m.free}
	case strings.HasSuffix(r.URL.Path, manage.PathList):
		ep = endpoint{http.MethodGet, m.list}
	case strings.HasSuffix(r.URL.Path, manage.PathShow):
		ep = endpoint{http.MethodGet, m.show}
	default:
		return answer(http.StatusNotFound, "Method not allowed.").withErr(fmt.Errorf("unknown endpoint %q; known: %s, %s, %s, %s",
			r.URL.Path, manage.PathPopulate, manage.PathFree, manage.PathList, manage.PathShow))
	}
	if r.Method != ep.method {
		return answer(http.StatusMethodNotAllowed, "Method not allowed.").withErr(fmt.Errorf("%s takes %s, not %s", r.URL.Path, ep.method, r.Method))
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxManageBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return answer(http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body over %d bytes.", maxManageBody))
		}
		return answer(http.StatusBadRequest, "Cannot read the request body.").withErr(err)
	}
	return ep.fn(ctx, body)
}

// decodeStrict decodes a JSON object into v, refusing unknown fields and trailing data. An empty
// body decodes as {}.
func decodeStrict(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := decodeOne(dec, v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}

// checkTrunks refuses trunks (or node names) that this node does not serve.
func (m *ManageServer) checkTrunks(trunks []string) *manageAnswer {
	for _, t := range trunks {
		if t != m.Admin.Node() {
			return answer(http.StatusBadRequest, fmt.Sprintf("Trunk %s is not served by this node: this node serves trunk %s.", t, m.Admin.Node()))
		}
	}
	return nil
}

func (m *ManageServer) populate(ctx context.Context, body []byte) *manageAnswer {
	var req manage.PopulateRequest
	if err := decodeStrict(body, &req); err != nil {
		return answer(http.StatusBadRequest, "Invalid populatePool request.").withErr(err)
	}
	if len(req.Trunks) == 0 {
		return answer(http.StatusBadRequest, "Trunk port IP(s) missing.")
	}
	n := 1
	if req.NumPorts != nil {
		n = *req.NumPorts
	}
	if n < 1 || n > manage.MaxPopulate {
		return answer(http.StatusBadRequest, fmt.Sprintf("Invalid num_ports %d: it must be between 1 and %d.", n, manage.MaxPopulate))
	}
	if bad := m.checkTrunks(req.Trunks); bad != nil {
		return bad
	}
	key, err := m.DefaultPool(ctx)
	if err != nil {
		return answer(http.StatusInternalServerError, fmt.Sprintf("Error while populating pool %s with %d ports.", manage.PyList(req.Trunks), n)).withErr(err)
	}
	created, capped, err := m.Admin.Populate(ctx, key, n, req.Force)
	switch {
	case errors.Is(err, pool.ErrNoPools):
		return answer(http.StatusConflict, "This agent keeps no pools: [kubernetes] vif_pool_driver is noop.").withErr(err)
	case errors.Is(err, pool.ErrNotReady):
		return answer(http.StatusServiceUnavailable, "The agent is still loading its pools; try again in a moment.").withErr(err)
	}
	if err != nil {
		a := answer(http.StatusInternalServerError, fmt.Sprintf("Error while populating pool %s with %d ports.", manage.PyList(req.Trunks), n)).withErr(err)
		a.Created = &created
		return a
	}
	if created == 0 && capped > 0 {
		a := answer(http.StatusConflict, fmt.Sprintf("Ports pool at %s is full (ports_pool_max = %d): populated with 0 ports. Add \"force\": true to go past it.", manage.PyList(req.Trunks), m.Max))
		a.Created, a.Refused = &created, &capped
		return a
	}
	msg := fmt.Sprintf("Ports pool at %s was populated with %d ports.", manage.PyList(req.Trunks), created)
	if capped > 0 {
		msg += fmt.Sprintf(" %d more were refused: ports_pool_max is %d.", capped, m.Max)
	}
	a := answer(http.StatusOK, msg)
	a.Created, a.Refused = &created, &capped
	return a
}

func (m *ManageServer) free(ctx context.Context, body []byte) *manageAnswer {
	var req manage.FreeRequest
	if err := decodeStrict(body, &req); err != nil {
		return answer(http.StatusBadRequest, "Invalid freePool request.").withErr(err)
	}
	if bad := m.checkTrunks(req.Trunks); bad != nil {
		return bad
	}
	which := "all"
	if len(req.Trunks) > 0 {
		which = manage.PyList(req.Trunks)
	}
	total := 0
	var errs []error
	for _, key := range m.Admin.Keys() {
		n, err := m.Admin.Free(ctx, key)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("pool %s: %w", key, err))
		}
	}
	if len(errs) > 0 {
		a := answer(http.StatusInternalServerError, fmt.Sprintf("Error freeing ports pool: %s.", which)).withErr(errors.Join(errs...))
		a.Deleted = &total
		return a
	}
	a := answer(http.StatusOK, fmt.Sprintf("Ports pool belonging to %s was freed.", which))
	a.Deleted = &total
	return a
}

func (m *ManageServer) poolInfo(key pool.Key, withPorts bool) manage.Pool {
	st := m.Admin.Stats(key)
	p := manage.Pool{Node: key.Node, Project: key.Project, Network: key.Network, Free: st.Free, InUse: st.InUse, Cooling: st.Cooling + st.Recycling, InFlight: st.InFlight}
	if withPorts {
		seen := map[pool.SGSet]bool{}
		for _, port := range m.Admin.FreePorts(key) {
			p.PortIDs = append(p.PortIDs, port.ID)
			if !seen[port.SGs] {
				seen[port.SGs] = true
				p.SGSets = append(p.SGSets, string(port.SGs))
			}
		}
	}
	return p
}

func (m *ManageServer) list(_ context.Context, body []byte) *manageAnswer {
	var req struct{}
	if err := decodeStrict(body, &req); err != nil {
		return answer(http.StatusBadRequest, "Invalid listPools request.").withErr(err)
	}
	keys := m.Admin.Keys()
	if len(keys) == 0 {
		return answer(http.StatusOK, "Pools:\nThere are no pools")
	}
	var b strings.Builder
	b.WriteString("Pools:\n")
	a := answer(http.StatusOK, "")
	for _, key := range keys {
		info := m.poolInfo(key, false)
		a.Pools = append(a.Pools, info)
		fmt.Fprintf(&b, "%s has %d ports\n", manage.PyJSON(key.Node, key.Project, key.Network), info.Free)
	}
	a.Message = b.String()
	return a
}

func (m *ManageServer) show(_ context.Context, body []byte) *manageAnswer {
	var req manage.ShowRequest
	if err := decodeStrict(body, &req); err != nil {
		return answer(http.StatusBadRequest, manage.InvalidPoolKey).withErr(err)
	}
	pk, err := manage.ParsePoolKey(req.PoolKey)
	if err != nil {
		return answer(http.StatusBadRequest, manage.InvalidPoolKey).withErr(err)
	}
	if bad := m.checkTrunks([]string{pk.Node}); bad != nil {
		return bad
	}
	var repr string
	var matches []pool.Key
	for _, key := range m.Admin.Keys() {
		if key.Node == pk.Node && key.Project == pk.Project && (pk.HasSGList || key.Network == pk.Network) {
			matches = append(matches, key)
		}
	}
	wantSGs := pool.NewSGSet(pk.SGs...)
	if pk.HasSGList {
		repr = fmt.Sprintf("('%s', '%s', %s)", pk.Node, pk.Project, manage.PyTuple(wantSGs.IDs()))
	} else {
		repr = fmt.Sprintf("('%s', '%s', '%s')", pk.Node, pk.Project, pk.Network)
	}
	if len(matches) == 0 {
		return answer(http.StatusNotFound, fmt.Sprintf("Pool %s not found on this node. listPools shows the pools it has.", repr))
	}
	a := answer(http.StatusOK, "")
	for _, key := range matches {
		for _, port := range m.Admin.FreePorts(key) {
			if !pk.HasSGList || port.SGs == wantSGs {
				a.PortIDs = append(a.PortIDs, port.ID)
			}
		}
	}
	if len(a.PortIDs) == 0 {
		a.Message = fmt.Sprintf("Pool %s ports are:\nEmpty pool", repr)
		return a
	}
	a.Message = fmt.Sprintf("Pool %s ports are:\n%s\n", repr, strings.Join(a.PortIDs, "\n"))
	return a
}
