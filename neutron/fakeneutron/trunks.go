package fakeneutron

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"
)

type subport struct {
	portID  string
	segType string
	segID   int
}

type trunk struct {
	id, name, project, portID string
	subports                  []subport
	tags                      []string
	revision                  int
	created, updated          time.Time
}

func (t *trunk) view() map[string]any {
	subs := make([]map[string]any, len(t.subports))
	for i, sp := range t.subports {
		subs[i] = map[string]any{"port_id": sp.portID, "segmentation_type": sp.segType, "segmentation_id": sp.segID}
	}
	return map[string]any{"id": t.id, "name": t.name, "project_id": t.project, "tenant_id": t.project,
		"port_id": t.portID, "status": "DOWN", "admin_state_up": true, "sub_ports": subs,
		"revision_number": t.revision, "description": "", "tags": slices.Clone(t.tags),
		"created_at": stamp(t.created), "updated_at": stamp(t.updated)}
}

// trunkOfParent is the trunk whose parent is port; s.mu is held.
func (s *Server) trunkOfParent(portID string) *trunk {
	for _, t := range s.trunks {
		if t.portID == portID {
			return t
		}
	}
	return nil
}

// trunkOfSubport is the trunk port is a subport of; s.mu is held.
func (s *Server) trunkOfSubport(portID string) *trunk {
	for _, t := range s.trunks {
		for _, sp := range t.subports {
			if sp.portID == portID {
				return t
			}
		}
	}
	return nil
}

func (s *Server) routeTrunks(q *request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, m := q.parts, q.r.Method
	switch {
	case len(p) == 1 && m == http.MethodGet:
		views := make([]map[string]any, 0, len(s.trunks))
		for _, t := range s.trunks {
			views = append(views, t.view())
		}
		out, err := list(views, q.r.URL.Query(), q.base, "trunks", noSpecial)
		return http.StatusOK, out, err
	case len(p) == 1 && m == http.MethodPost:
		return s.createTrunk(q)
	case len(p) >= 2:
		t, ok := s.trunks[p[1]]
		if !ok {
			return 0, nil, notFound("TrunkNotFound", "Trunk %s could not be found.", p[1])
		}
		switch {
		case len(p) == 2 && m == http.MethodGet:
			return http.StatusOK, map[string]any{"trunk": t.view()}, nil
		case len(p) == 2 && m == http.MethodDelete:
			// Neutron deletes a trunk with subports too (the parent is not bound here).
			delete(s.trunks, t.id)
			return http.StatusNoContent, nil, nil
		case len(p) == 3 && p[2] == "get_subports" && m == http.MethodGet:
			return http.StatusOK, map[string]any{"sub_ports": t.view()["sub_ports"]}, nil
		case len(p) == 3 && p[2] == "add_subports" && m == http.MethodPut:
			return s.addSubports(q, t)
		case len(p) == 3 && p[2] == "remove_subports" && m == http.MethodPut:
			return s.removeSubports(q, t)
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}

func (s *Server) createTrunk(q *request) (int, any, error) {
	var b map[string]any
	if err := decode(q.body, "trunk", &b); err != nil {
		return 0, nil, err
	}
	if err := checkAttrs(b, "name", "project_id", "tenant_id", "port_id", "admin_state_up", "description", "sub_ports"); err != nil {
		return 0, nil, err
	}
	proj, err := projectOf(b)
	if err != nil {
		return 0, nil, err
	}
	parent, ok := s.ports[str(b, "port_id")]
	if !ok {
		return 0, nil, notFound("PortNotFound", "Port %s could not be found.", str(b, "port_id"))
	}
	if s.trunkOfParent(parent.id) != nil || s.trunkOfSubport(parent.id) != nil {
		return 0, nil, conflict("TrunkPortInUse", "Port %s is in use by another trunk.", parent.id)
	}
	now := s.now()
	t := &trunk{id: newID(), name: str(b, "name"), project: proj, portID: parent.id, revision: 0, created: now, updated: now}
	if raw, ok := b["sub_ports"]; ok && raw != nil {
		subs, err := s.checkSubports(t, raw)
		if err != nil {
			return 0, nil, err
		}
		s.attach(t, subs)
	}
	s.trunks[t.id] = t
	return http.StatusCreated, map[string]any{"trunk": t.view()}, nil
}

// checkSubports validates an add_subports batch against the trunk and every other trunk, as
// Neutron does before changing anything; s.mu is held.
func (s *Server) checkSubports(t *trunk, raw any) ([]subport, error) {
	items, ok := raw.([]any)
	if !ok {
		return nil, badRequest("sub_ports must be a list")
	}
	var subs []subport
	for _, it := range items {
		m, _ := it.(map[string]any)
		sp := subport{portID: str(m, "port_id"), segType: str(m, "segmentation_type")}
		if sp.segType == "" {
			sp.segType = "vlan"
		}
		if sp.segType != "vlan" {
			return nil, badRequest("Segmentation type '%s' is not supported", sp.segType)
		}
		f, ok := m["segmentation_id"].(float64)
		if !ok || f != float64(int(f)) {
			return nil, badRequest("Invalid segmentation id '%v'", m["segmentation_id"])
		}
		sp.segID = int(f)
		if sp.segID < 1 || sp.segID > 4094 {
			return nil, badRequest("Segmentation ID '%d' is not in range.", sp.segID)
		}
		if _, ok := s.ports[sp.portID]; !ok {
			return nil, notFound("PortNotFound", "Port %s could not be found.", sp.portID)
		}
		for _, o := range subs {
			if o.segID == sp.segID {
				return nil, badRequest("Segmentation ID '%d' for '%s' is not unique.", sp.segID, sp.portID)
			}
			if o.portID == sp.portID {
				return nil, badRequest("Non unique UUID for subport: '%s'.", sp.portID)
			}
		}
		subs = append(subs, sp)
	}
	for _, sp := range subs {
		if s.trunkOfParent(sp.portID) != nil {
			return nil, conflict("ParentPortInUse", "Port %s is currently in use and is not eligible for use as a parent port.", sp.portID)
		}
		if s.trunkOfSubport(sp.portID) != nil {
			return nil, conflict("TrunkPortInUse", "Port %s is in use by another trunk.", sp.portID)
		}
		for _, cur := range t.subports {
			if cur.segID == sp.segID && cur.segType == sp.segType {
				return nil, conflict("DuplicateSubPort", "segmentation_type %s and segmentation_id %d already in use on trunk %s.",
					sp.segType, sp.segID, t.id)
			}
		}
	}
	return subs, nil
}

// attach adds validated subports; s.mu is held.
func (s *Server) attach(t *trunk, subs []subport) {
	parent := s.ports[t.portID]
	for _, sp := range subs {
		t.subports = append(t.subports, sp)
		if s.RewriteSubportOwner {
			p := s.ports[sp.portID]
			p.deviceOwner = "trunk:subport"
			p.deviceID = t.id
			if parent != nil {
				p.hostID = parent.hostID
			}
			p.revision++
		}
	}
}

func (s *Server) addSubports(q *request, t *trunk) (int, any, error) {
	raw, ok := q.body["sub_ports"]
	if !ok {
		return 0, nil, badRequest("sub_ports is required")
	}
	var items []any
	if err := json.Unmarshal(raw, &items); err != nil {
		return 0, nil, badRequest("sub_ports: %v", err)
	}
	subs, err := s.checkSubports(t, items)
	if err != nil {
		return 0, nil, err
	}
	s.attach(t, subs)
	t.revision++
	t.updated = s.now()
	// Neutron answers the trunk itself, not wrapped in {"trunk": ...}.
	return http.StatusOK, t.view(), nil
}

func (s *Server) removeSubports(q *request, t *trunk) (int, any, error) {
	raw, ok := q.body["sub_ports"]
	if !ok {
		return 0, nil, badRequest("sub_ports is required")
	}
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err != nil {
		return 0, nil, badRequest("sub_ports: %v", err)
	}
	var ids []string
	for _, it := range items {
		id := str(it, "port_id")
		if slices.Contains(ids, id) {
			return 0, nil, badRequest("Non unique UUID for subport: '%s'.", id)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		if !slices.ContainsFunc(t.subports, func(sp subport) bool { return sp.portID == id }) {
			return 0, nil, notFound("SubPortNotFound", "SubPort %s on trunk %s could not be found.", id, t.id)
		}
	}
	t.subports = slices.DeleteFunc(t.subports, func(sp subport) bool { return slices.Contains(ids, sp.portID) })
	t.revision++
	t.updated = s.now()
	return http.StatusOK, t.view(), nil
}
