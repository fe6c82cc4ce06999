package fakeneutron

import (
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// subnetPool is a Neutron subnet pool: subnets created with its id get the lowest free prefix of
// the requested length, as the real server's prefix allocator does.
type subnetPool struct {
	id, name, project, description string
	prefixes                       []netip.Prefix
	defaultLen, minLen, maxLen     int
	revision                       int
	created                        time.Time
}

func (p *subnetPool) ipVersion() int {
	if len(p.prefixes) > 0 && p.prefixes[0].Addr().Is6() {
		return 6
	}
	return 4
}

// view is the pool as the Zed server shows it: prefix lengths are strings there.
func (p *subnetPool) view() map[string]any {
	prefixes := make([]string, len(p.prefixes))
	for i, x := range p.prefixes {
		prefixes[i] = x.String()
	}
	return map[string]any{"id": p.id, "name": p.name, "project_id": p.project, "tenant_id": p.project,
		"prefixes": prefixes, "ip_version": p.ipVersion(), "default_prefixlen": strconv.Itoa(p.defaultLen),
		"min_prefixlen": strconv.Itoa(p.minLen), "max_prefixlen": strconv.Itoa(p.maxLen), "is_default": false,
		"shared": false, "default_quota": nil, "address_scope_id": nil, "description": p.description,
		"tags": []string{}, "revision_number": p.revision, "created_at": stamp(p.created), "updated_at": stamp(p.created)}
}

// allocations are the prefixes of the subnets allocated from the pool; s.mu is held.
func (p *subnetPool) allocations(s *Server) []netip.Prefix {
	var out []netip.Prefix
	for _, sn := range s.subnets {
		if sn.poolID == p.id {
			out = append(out, sn.prefix)
		}
	}
	return out
}

// allocate picks the lowest free prefix for a subnet create body; s.mu is held.
func (p *subnetPool) allocate(s *Server, b map[string]any) (netip.Prefix, error) {
	if v, ok := b["ip_version"].(float64); ok && int(v) != p.ipVersion() {
		return netip.Prefix{}, errf(http.StatusBadRequest, "BadRequest",
			"Bad subnets request: Cannot allocate IPv%d subnet from IPv%d subnet pool.", int(v), p.ipVersion())
	}
	length := p.defaultLen
	if v, ok := b["prefixlen"].(float64); ok {
		length = int(v)
	}
	if length < p.minLen || length > p.maxLen {
		return netip.Prefix{}, errf(http.StatusBadRequest, "IllegalSubnetPoolPrefixLength",
			"Illegal prefix bounds: prefixlen=%d, must be between %d and %d.", length, p.minLen, p.maxLen)
	}
	used := p.allocations(s)
	for _, pfx := range p.prefixes {
		if length < pfx.Bits() {
			continue
		}
		a := pfx.Addr()
		for range 1 << 20 {
			cand := netip.PrefixFrom(a, length)
			if !pfx.Contains(a) {
				break
			}
			if !slices.ContainsFunc(used, cand.Overlaps) {
				return cand, nil
			}
			next := lastAddr(cand).Next()
			if !next.IsValid() {
				break
			}
			a = next
		}
	}
	return netip.Prefix{}, errf(http.StatusInternalServerError, "SubnetAllocationError",
		"Failed to allocate subnet: Insufficient prefix space to allocate subnet size /%d.", length)
}

// poolFor finds the pool a subnet create body names; s.mu is held.
func (s *Server) poolFor(id string, _ map[string]any) (*subnetPool, error) {
	if !validUUID(id) {
		return nil, badRequest("subnetpool_id. Reason: '%s' is not a valid UUID.", id)
	}
	p, ok := s.pools[id]
	if !ok {
		return nil, notFound("SubnetPoolNotFound", "Subnet pool %s could not be found.", id)
	}
	return p, nil
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

func (s *Server) routeSubnetPools(q *request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := q.parts
	switch {
	case len(p) == 1 && q.r.Method == http.MethodGet:
		views := make([]map[string]any, 0, len(s.pools))
		for _, sp := range s.pools {
			views = append(views, sp.view())
		}
		out, err := list(views, q.r.URL.Query(), q.base, "subnetpools", noSpecial)
		return http.StatusOK, out, err
	case len(p) == 1 && q.r.Method == http.MethodPost:
		var b map[string]any
		if err := decode(q.body, "subnetpool", &b); err != nil {
			return 0, nil, err
		}
		if err := noTagsInPost(b); err != nil {
			return 0, nil, err
		}
		if err := checkAttrs(b, "name", "project_id", "tenant_id", "prefixes", "default_prefixlen", "min_prefixlen",
			"max_prefixlen", "description", "shared", "is_default", "address_scope_id", "default_quota"); err != nil {
			return 0, nil, err
		}
		proj, err := projectOf(b)
		if err != nil {
			return 0, nil, err
		}
		raw, err := strList(b, "prefixes")
		if err != nil {
			return 0, nil, err
		}
		if len(raw) == 0 {
			return 0, nil, badRequest("prefixes: a subnet pool needs at least one prefix")
		}
		sp := &subnetPool{id: newID(), name: str(b, "name"), project: proj, description: str(b, "description"), created: s.now()}
		for _, r := range raw {
			pfx, err := netip.ParsePrefix(r)
			if err != nil {
				return 0, nil, badRequest("'%s' is not a valid IP subnet.", r)
			}
			sp.prefixes = append(sp.prefixes, pfx.Masked())
		}
		bits := sp.prefixes[0].Addr().BitLen()
		sp.minLen, sp.maxLen = 8, bits
		if bits == 128 {
			sp.minLen = 64
		}
		for k, dst := range map[string]*int{"min_prefixlen": &sp.minLen, "max_prefixlen": &sp.maxLen} {
			if n, ok := intAttr(b[k]); ok {
				*dst = n
			}
		}
		sp.defaultLen = sp.minLen
		if n, ok := intAttr(b["default_prefixlen"]); ok {
			sp.defaultLen = n
		}
		if sp.defaultLen < sp.minLen || sp.defaultLen > sp.maxLen {
			return 0, nil, errf(http.StatusBadRequest, "IllegalSubnetPoolPrefixBounds",
				"Illegal prefix bounds: default_prefixlen=%d, min_prefixlen=%d, max_prefixlen=%d.", sp.defaultLen, sp.minLen, sp.maxLen)
		}
		s.pools[sp.id] = sp
		return http.StatusCreated, map[string]any{"subnetpool": sp.view()}, nil
	case len(p) == 2:
		sp, ok := s.pools[p[1]]
		if !ok {
			return 0, nil, notFound("SubnetPoolNotFound", "Subnet pool %s could not be found.", p[1])
		}
		switch q.r.Method {
		case http.MethodGet:
			return http.StatusOK, map[string]any{"subnetpool": sp.view()}, nil
		case http.MethodDelete:
			if len(sp.allocations(s)) > 0 {
				return 0, nil, errf(http.StatusBadRequest, "SubnetPoolDeleteError",
					"Unable to delete subnet pool: Subnet pool has existing allocations.")
			}
			delete(s.pools, sp.id)
			return http.StatusNoContent, nil, nil
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}

// intAttr reads an integer attribute sent as a JSON number or a string (Neutron takes both).
func intAttr(v any) (int, bool) {
	switch t := v.(type) {
	case float64:
		return int(t), true
	case string:
		n, err := strconv.Atoi(t)
		return n, err == nil
	}
	return 0, false
}
