package fakeneutron

import (
	"net/http"
	"slices"
	"time"
)

// routerInterfaceOwner is the device_owner of a router's interface ports; Neutron refuses to
// delete them through the port API.
const routerInterfaceOwner = "network:router_interface"

// router is a Neutron router (L3 plugin, "router" extension). Its interfaces are ports owned by
// network:router_interface holding the subnet's gateway IP, as in Neutron.
type router struct {
	id, name, project string
	revision          int
	created           time.Time
}

// interfaces are the router's interface ports; s.mu is held.
func (s *Server) routerPorts(r *router) []*port {
	var out []*port
	for _, p := range s.ports {
		if p.deviceOwner == routerInterfaceOwner && p.deviceID == r.id {
			out = append(out, p)
		}
	}
	return out
}

func (r *router) view() map[string]any {
	return map[string]any{"id": r.id, "name": r.name, "project_id": r.project, "tenant_id": r.project,
		"status": "ACTIVE", "admin_state_up": true, "external_gateway_info": nil, "routes": []any{},
		"description": "", "tags": []string{}, "revision_number": r.revision,
		"created_at": stamp(r.created), "updated_at": stamp(r.created)}
}

// AddRouter creates a router directly (tests), as POST /v2.0/routers would.
func (s *Server) AddRouter(name, project string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &router{id: newID(), name: name, project: project, created: s.now()}
	s.routers[r.id] = r
	return r.id
}

// RouterSubnets returns the subnets a router has interfaces on, sorted.
func (s *Server) RouterSubnets(routerID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.routers[routerID]
	if !ok {
		return nil
	}
	var out []string
	for _, p := range s.routerPorts(r) {
		for _, f := range p.fixedIPs {
			out = append(out, f.subnetID)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Server) hasExtension(alias string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ext[alias]
}

func (s *Server) routeRouters(q *request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, m := q.parts, q.r.Method
	switch {
	case len(p) == 1 && m == http.MethodGet:
		views := make([]map[string]any, 0, len(s.routers))
		for _, r := range s.routers {
			views = append(views, r.view())
		}
		out, err := list(views, q.r.URL.Query(), q.base, "routers", noSpecial)
		return http.StatusOK, out, err
	case len(p) == 1 && m == http.MethodPost:
		var b map[string]any
		if err := decode(q.body, "router", &b); err != nil {
			return 0, nil, err
		}
		if err := noTagsInPost(b); err != nil {
			return 0, nil, err
		}
		if err := checkAttrs(b, "name", "project_id", "tenant_id", "admin_state_up", "description", "external_gateway_info"); err != nil {
			return 0, nil, err
		}
		proj, err := projectOf(b)
		if err != nil {
			return 0, nil, err
		}
		r := &router{id: newID(), name: str(b, "name"), project: proj, created: s.now()}
		s.routers[r.id] = r
		return http.StatusCreated, map[string]any{"router": r.view()}, nil
	case len(p) >= 2:
		r, ok := s.routers[p[1]]
		if !ok {
			return 0, nil, notFound("RouterNotFound", "Router %s could not be found", p[1])
		}
		switch {
		case len(p) == 2 && m == http.MethodGet:
			return http.StatusOK, map[string]any{"router": r.view()}, nil
		case len(p) == 2 && m == http.MethodDelete:
			if len(s.routerPorts(r)) > 0 {
				return 0, nil, conflict("RouterInUse", "Router %s still has ports", r.id)
			}
			delete(s.routers, r.id)
			return http.StatusNoContent, nil, nil
		case len(p) == 3 && p[2] == "add_router_interface" && m == http.MethodPut:
			return s.addRouterInterface(q, r)
		case len(p) == 3 && p[2] == "remove_router_interface" && m == http.MethodPut:
			return s.removeRouterInterface(q, r)
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}

func interfaceInfo(r *router, p *port, sn *subnet) map[string]any {
	return map[string]any{"id": r.id, "tenant_id": r.project, "project_id": r.project, "subnet_id": sn.id,
		"subnet_ids": []string{sn.id}, "port_id": p.id, "network_id": p.networkID, "tags": []string{}}
}

// addRouterInterface attaches a subnet by its id (the form kuryr uses): a new port with the
// subnet's gateway IP, owned by the router.
func (s *Server) addRouterInterface(q *request, r *router) (int, any, error) {
	subnetID := ""
	if raw, ok := q.body["subnet_id"]; ok {
		var id string
		if err := decode(q.body, "subnet_id", &id); err != nil || id == "" {
			return 0, nil, badRequest("subnet_id %s", raw)
		}
		subnetID = id
	}
	if subnetID == "" {
		return 0, nil, errf(http.StatusBadRequest, "BadRequest", "Bad router request: Either subnet_id or port_id must be specified.")
	}
	sn, ok := s.subnets[subnetID]
	if !ok {
		return 0, nil, notFound("SubnetNotFound", "Subnet %s could not be found.", subnetID)
	}
	if !sn.gateway.IsValid() {
		return 0, nil, errf(http.StatusBadRequest, "BadRequest", "Bad router request: Subnet for router interface must have a gateway IP.")
	}
	for _, p := range s.routerPorts(r) {
		for _, f := range p.fixedIPs {
			if f.subnetID == sn.id {
				return 0, nil, errf(http.StatusBadRequest, "BadRequest", "Bad router request: Router already has a port on subnet %s.", sn.id)
			}
			if o := s.subnets[f.subnetID]; o != nil && o.prefix.Overlaps(sn.prefix) {
				return 0, nil, errf(http.StatusBadRequest, "BadRequest",
					"Bad router request: Cidr %s of subnet %s overlaps with cidr %s of subnet %s.", sn.prefix, sn.id, o.prefix, o.id)
			}
		}
	}
	now := s.now()
	pt := &port{id: newID(), networkID: sn.networkID, project: r.project, deviceID: r.id, deviceOwner: routerInterfaceOwner,
		adminUp: true, revision: 1, created: now, updated: now}
	s.macSeq++
	pt.mac = macOf(s.macSeq)
	if err := sn.take(sn.gateway, pt.id); err != nil {
		return 0, nil, err
	}
	pt.fixedIPs = []fixedIP{{subnetID: sn.id, ip: sn.gateway}}
	s.ports[pt.id] = pt
	r.revision++
	return http.StatusOK, interfaceInfo(r, pt, sn), nil
}

func (s *Server) removeRouterInterface(q *request, r *router) (int, any, error) {
	var subnetID string
	if err := decode(q.body, "subnet_id", &subnetID); err != nil || subnetID == "" {
		return 0, nil, errf(http.StatusBadRequest, "BadRequest", "Bad router request: Either subnet_id or port_id must be specified.")
	}
	sn, ok := s.subnets[subnetID]
	if !ok {
		return 0, nil, notFound("SubnetNotFound", "Subnet %s could not be found.", subnetID)
	}
	for _, pt := range s.routerPorts(r) {
		for _, f := range pt.fixedIPs {
			if f.subnetID == sn.id {
				s.releaseIPs(pt)
				delete(s.ports, pt.id)
				r.revision++
				return http.StatusOK, interfaceInfo(r, pt, sn), nil
			}
		}
	}
	return 0, nil, notFound("RouterInterfaceNotFoundForSubnet", "Router %s has no interface on subnet %s", r.id, sn.id)
}
