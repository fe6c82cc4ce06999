package fakeneutron

import (
	"net/http"
	"net/netip"
	"slices"
	"time"
)

type network struct {
	id, name, project string
	description       string
	mtu               int
	adminUp           bool
	tags              []string
	revision          int
	created, updated  time.Time
}

func (n *network) view(s *Server) map[string]any {
	var subs []string
	for _, sn := range s.subnets {
		if sn.networkID == n.id {
			subs = append(subs, sn.id)
		}
	}
	slices.Sort(subs)
	if subs == nil {
		subs = []string{}
	}
	return map[string]any{"id": n.id, "name": n.name, "project_id": n.project, "tenant_id": n.project,
		"mtu": n.mtu, "status": "ACTIVE", "admin_state_up": n.adminUp, "subnets": subs, "shared": false,
		"router:external": false, "tags": slices.Clone(n.tags), "revision_number": n.revision,
		"description": n.description, "created_at": stamp(n.created), "updated_at": stamp(n.updated)}
}

type subnet struct {
	id, name, project, networkID string
	description, poolID          string
	tags                         []string
	prefix                       netip.Prefix
	gateway                      netip.Addr // invalid: no gateway
	first, last                  netip.Addr // allocation pool
	dns                          []string
	routes                       []map[string]string
	used                         map[netip.Addr]string // address -> port
	next                         netip.Addr
	revision                     int
	created, updated             time.Time
}

func (sn *subnet) view() map[string]any {
	gw := any(nil)
	if sn.gateway.IsValid() {
		gw = sn.gateway.String()
	}
	routes := sn.routes
	if routes == nil {
		routes = []map[string]string{}
	}
	dns := sn.dns
	if dns == nil {
		dns = []string{}
	}
	ver := 4
	if sn.prefix.Addr().Is6() {
		ver = 6
	}
	return map[string]any{"id": sn.id, "name": sn.name, "project_id": sn.project, "tenant_id": sn.project,
		"network_id": sn.networkID, "cidr": sn.prefix.String(), "gateway_ip": gw, "ip_version": ver,
		"dns_nameservers": dns, "host_routes": routes, "enable_dhcp": true,
		"allocation_pools": []map[string]string{{"start": sn.first.String(), "end": sn.last.String()}},
		"revision_number":  sn.revision, "tags": slices.Clone(sn.tags), "description": sn.description,
		"subnetpool_id": nilIfEmpty(sn.poolID),
		"created_at":    stamp(sn.created), "updated_at": stamp(sn.updated)}
}

// allocate takes the next free address of the pool for port; s.mu is held.
func (sn *subnet) allocate(portID string) (netip.Addr, error) {
	a := sn.next
	for range 1 << 20 {
		if !sn.prefix.Contains(a) || sn.last.Less(a) {
			a = sn.first
		}
		if _, taken := sn.used[a]; !taken && a != sn.gateway {
			sn.used[a] = portID
			sn.next = a.Next()
			return a, nil
		}
		a = a.Next()
		if a == sn.next {
			break
		}
	}
	return netip.Addr{}, conflict("IpAddressGenerationFailure", "No more IP addresses available on network %s.", sn.networkID)
}

// take reserves a requested address for port; s.mu is held.
func (sn *subnet) take(a netip.Addr, portID string) error {
	if !sn.prefix.Contains(a) {
		return badRequest("IP address %s is not a valid IP for the specified subnet.", a)
	}
	if owner, taken := sn.used[a]; taken && owner != portID {
		return conflict("IpAddressAlreadyAllocated", "IP address %s already allocated in subnet %s", a, sn.id)
	}
	sn.used[a] = portID
	return nil
}

type secGroup struct {
	id, name, project, description string
	revision                       int
	created                        time.Time
}

func (g *secGroup) view() map[string]any {
	return map[string]any{"id": g.id, "name": g.name, "project_id": g.project, "tenant_id": g.project,
		"description": g.description, "security_group_rules": []any{}, "stateful": true,
		"revision_number": g.revision, "tags": []string{}, "shared": false,
		"created_at": stamp(g.created), "updated_at": stamp(g.created)}
}

// defaultSG returns the project's "default" group, creating it like Neutron does on first use;
// s.mu is held.
func (s *Server) defaultSG(project string) *secGroup {
	for _, g := range s.sgs {
		if g.project == project && g.name == "default" {
			return g
		}
	}
	g := &secGroup{id: newID(), name: "default", project: project, description: "Default security group",
		revision: 1, created: s.now()}
	s.sgs[g.id] = g
	return g
}

func (s *Server) routeNetworks(q *request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := q.parts
	switch {
	case len(p) == 1 && q.r.Method == http.MethodGet:
		views := make([]map[string]any, 0, len(s.networks))
		for _, n := range s.networks {
			views = append(views, n.view(s))
		}
		out, err := list(views, q.r.URL.Query(), q.base, "networks", noSpecial)
		return http.StatusOK, out, err
	case len(p) == 1 && q.r.Method == http.MethodPost:
		var b map[string]any
		if err := decode(q.body, "network", &b); err != nil {
			return 0, nil, err
		}
		if err := noTagsInPost(b); err != nil {
			return 0, nil, err
		}
		if err := checkAttrs(b, "name", "project_id", "tenant_id", "admin_state_up", "mtu", "description"); err != nil {
			return 0, nil, err
		}
		proj, err := projectOf(b)
		if err != nil {
			return 0, nil, err
		}
		n := &network{id: newID(), name: str(b, "name"), description: str(b, "description"), project: proj, mtu: 1450,
			adminUp: true, revision: 1, created: s.now(), updated: s.now()}
		if m, ok := b["mtu"].(float64); ok {
			n.mtu = int(m)
		}
		if up, ok := b["admin_state_up"].(bool); ok {
			n.adminUp = up
		}
		s.networks[n.id] = n
		return http.StatusCreated, map[string]any{"network": n.view(s)}, nil
	case len(p) == 2:
		n, ok := s.networks[p[1]]
		if !ok {
			return 0, nil, notFound("NetworkNotFound", "Network %s could not be found.", p[1])
		}
		switch q.r.Method {
		case http.MethodGet:
			return http.StatusOK, map[string]any{"network": n.view(s)}, nil
		case http.MethodDelete:
			for _, pt := range s.ports {
				if pt.networkID == n.id && pt.deviceOwner != "network:dhcp" {
					return 0, nil, conflict("NetworkInUse", "Unable to complete operation on network %s. There are one or more ports still in use on the network, id for these ports is: %s.", n.id, pt.id)
				}
			}
			for id, sn := range s.subnets {
				if sn.networkID == n.id {
					delete(s.subnets, id)
				}
			}
			delete(s.networks, n.id)
			return http.StatusNoContent, nil, nil
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}

func (s *Server) routeSubnets(q *request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := q.parts
	switch {
	case len(p) == 1 && q.r.Method == http.MethodGet:
		views := make([]map[string]any, 0, len(s.subnets))
		for _, sn := range s.subnets {
			views = append(views, sn.view())
		}
		out, err := list(views, q.r.URL.Query(), q.base, "subnets", noSpecial)
		return http.StatusOK, out, err
	case len(p) == 1 && q.r.Method == http.MethodPost:
		var b map[string]any
		if err := decode(q.body, "subnet", &b); err != nil {
			return 0, nil, err
		}
		sn, err := s.newSubnet(b)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, map[string]any{"subnet": sn.view()}, nil
	case len(p) == 2:
		sn, ok := s.subnets[p[1]]
		if !ok {
			return 0, nil, notFound("SubnetNotFound", "Subnet %s could not be found.", p[1])
		}
		switch q.r.Method {
		case http.MethodGet:
			return http.StatusOK, map[string]any{"subnet": sn.view()}, nil
		case http.MethodDelete:
			if len(sn.used) > 0 {
				return 0, nil, conflict("SubnetInUse", "Unable to complete operation on subnet %s: One or more ports have an IP allocation from this subnet.", sn.id)
			}
			delete(s.subnets, sn.id)
			return http.StatusNoContent, nil, nil
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}

// newSubnet validates and stores a subnet; s.mu is held.
func (s *Server) newSubnet(b map[string]any) (*subnet, error) {
	if err := noTagsInPost(b); err != nil {
		return nil, err
	}
	if err := checkAttrs(b, "name", "project_id", "tenant_id", "network_id", "cidr", "ip_version", "gateway_ip",
		"dns_nameservers", "host_routes", "enable_dhcp", "description", "allocation_pools", "subnetpool_id", "prefixlen"); err != nil {
		return nil, err
	}
	proj, err := projectOf(b)
	if err != nil {
		return nil, err
	}
	n, ok := s.networks[str(b, "network_id")]
	if !ok {
		return nil, notFound("NetworkNotFound", "Network %s could not be found.", str(b, "network_id"))
	}
	var pool *subnetPool
	if id := str(b, "subnetpool_id"); id != "" && str(b, "cidr") == "" {
		if pool, err = s.poolFor(id, b); err != nil {
			return nil, err
		}
		cidr, err := pool.allocate(s, b)
		if err != nil {
			return nil, err
		}
		b["cidr"] = cidr.String()
	}
	prefix, err := netip.ParsePrefix(str(b, "cidr"))
	if err != nil || prefix.Masked() != prefix {
		return nil, badRequest("'%s' is not a valid IP subnet.", str(b, "cidr"))
	}
	if prefix.Bits() > prefix.Addr().BitLen()-2 {
		return nil, badRequest("subnet %s is too small", prefix)
	}
	first := prefix.Addr().Next()
	last := lastAddr(prefix)
	if prefix.Addr().Is4() {
		last = last.Prev() // broadcast
	}
	sn := &subnet{id: newID(), name: str(b, "name"), description: str(b, "description"), project: proj, networkID: n.id, prefix: prefix,
		gateway: first, first: first.Next(), last: last, used: map[netip.Addr]string{}, revision: 0,
		created: s.now(), updated: s.now()}
	if gw, present := b["gateway_ip"]; present {
		sn.gateway = netip.Addr{}
		if gws, ok := gw.(string); ok && gws != "" {
			a, err := netip.ParseAddr(gws)
			if err != nil || !prefix.Contains(a) {
				return nil, badRequest("Gateway IP %s conflicts with subnet %s", gws, prefix)
			}
			sn.gateway = a
			if a == first {
				sn.first = first.Next()
			} else {
				sn.first = first
			}
		} else {
			sn.first = first
		}
	}
	sn.next = sn.first
	if sn.dns, err = strList(b, "dns_nameservers"); err != nil {
		return nil, err
	}
	if hr, ok := b["host_routes"].([]any); ok {
		for _, r := range hr {
			m, _ := r.(map[string]any)
			sn.routes = append(sn.routes, map[string]string{"destination": str(m, "destination"), "nexthop": str(m, "nexthop")})
		}
	}
	if pool != nil {
		sn.poolID = pool.id
	}
	s.subnets[sn.id] = sn
	return sn, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		keep := p.Bits() - i*8
		switch {
		case keep >= 8:
		case keep <= 0:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> keep
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (s *Server) routeSecurityGroups(q *request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := q.parts
	switch {
	case len(p) == 1 && q.r.Method == http.MethodGet:
		if q.project != "" {
			s.defaultSG(q.project)
		}
		views := make([]map[string]any, 0, len(s.sgs))
		for _, g := range s.sgs {
			views = append(views, g.view())
		}
		out, err := list(views, q.r.URL.Query(), q.base, "security-groups", noSpecial)
		return http.StatusOK, out, err
	case len(p) == 1 && q.r.Method == http.MethodPost:
		var b map[string]any
		if err := decode(q.body, "security_group", &b); err != nil {
			return 0, nil, err
		}
		if err := checkAttrs(b, "name", "project_id", "tenant_id", "description", "stateful"); err != nil {
			return 0, nil, err
		}
		proj, err := projectOf(b)
		if err != nil {
			return 0, nil, err
		}
		g := &secGroup{id: newID(), name: str(b, "name"), project: proj, description: str(b, "description"),
			revision: 1, created: s.now()}
		s.sgs[g.id] = g
		return http.StatusCreated, map[string]any{"security_group": g.view()}, nil
	case len(p) == 2:
		g, ok := s.sgs[p[1]]
		if !ok {
			return 0, nil, notFound("SecurityGroupNotFound", "Security group %s does not exist", p[1])
		}
		switch q.r.Method {
		case http.MethodGet:
			return http.StatusOK, map[string]any{"security_group": g.view()}, nil
		case http.MethodDelete:
			for _, pt := range s.ports {
				if slices.Contains(pt.sgs, g.id) {
					return 0, nil, conflict("SecurityGroupInUse", "Security Group %s in use.", g.id)
				}
			}
			delete(s.sgs, g.id)
			return http.StatusNoContent, nil, nil
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}
