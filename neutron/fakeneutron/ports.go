package fakeneutron

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

type fixedIP struct {
	subnetID string
	ip       netip.Addr
}

type port struct {
	id, name, networkID, project, mac   string
	deviceID, deviceOwner, hostID, desc string
	adminUp                             bool
	fixedIPs                            []fixedIP
	sgs                                 []string
	tags                                []string
	revision                            int
	created, updated                    time.Time
}

// vif is the binding the port gets: bound on hosts with an agent, failed elsewhere, unbound
// without a host.
func (s *Server) vif(p *port) (string, map[string]any) {
	switch {
	case p.hostID == "":
		return "unbound", map[string]any{}
	case s.agents[p.hostID]:
		return "ovs", map[string]any{"connectivity": "l2", "port_filter": true, "ovs_hybrid_plug": false,
			"datapath_type": "system", "bridge_name": "br-int"}
	}
	return "binding_failed", map[string]any{}
}

// view is the port as Neutron shows it; s.mu is held.
func (s *Server) portView(p *port) map[string]any {
	ips := make([]map[string]string, len(p.fixedIPs))
	for i, f := range p.fixedIPs {
		ips[i] = map[string]string{"subnet_id": f.subnetID, "ip_address": f.ip.String()}
	}
	vifType, vifDetails := s.vif(p)
	v := map[string]any{
		"id": p.id, "name": p.name, "network_id": p.networkID, "project_id": p.project, "tenant_id": p.project,
		"mac_address": p.mac, "admin_state_up": p.adminUp, "status": "DOWN", "device_id": p.deviceID,
		"device_owner": p.deviceOwner, "fixed_ips": ips, "security_groups": slices.Clone(p.sgs),
		"port_security_enabled": true, "binding:host_id": p.hostID, "binding:vnic_type": "normal",
		"binding:profile": map[string]any{}, "binding:vif_type": vifType, "binding:vif_details": vifDetails,
		"allowed_address_pairs": []any{}, "extra_dhcp_opts": []any{}, "description": p.desc,
		"tags": slices.Clone(p.tags), "revision_number": p.revision,
		"created_at": stamp(p.created), "updated_at": stamp(p.updated),
	}
	if t := s.trunkOfParent(p.id); t != nil {
		subs := make([]map[string]any, len(t.subports))
		for i, sp := range t.subports {
			mac := ""
			if sub := s.ports[sp.portID]; sub != nil {
				mac = sub.mac
			}
			subs[i] = map[string]any{"segmentation_id": sp.segID, "segmentation_type": sp.segType,
				"port_id": sp.portID, "mac_address": mac}
		}
		v["trunk_details"] = map[string]any{"trunk_id": t.id, "sub_ports": subs}
	}
	return v
}

var portCreateAttrs = []string{"name", "network_id", "project_id", "tenant_id", "admin_state_up", "fixed_ips",
	"device_id", "device_owner", "binding:host_id", "binding:vnic_type", "binding:profile", "security_groups",
	"description", "tags", "mac_address", "port_security_enabled"}

var portUpdateAttrs = []string{"name", "admin_state_up", "fixed_ips", "device_id", "device_owner",
	"binding:host_id", "binding:vnic_type", "binding:profile", "security_groups", "description"}

func (s *Server) routePorts(q *request) (int, any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, m := q.parts, q.r.Method
	switch {
	case len(p) == 1 && m == http.MethodGet:
		views := make([]map[string]any, 0, len(s.ports))
		for _, pt := range s.ports {
			views = append(views, s.portView(pt))
		}
		out, err := list(views, q.r.URL.Query(), q.base, "ports", portFilter)
		return http.StatusOK, out, err
	case len(p) == 1 && m == http.MethodPost:
		return s.createPorts(q)
	case len(p) >= 2:
		pt, ok := s.ports[p[1]]
		if !ok {
			return 0, nil, notFound("PortNotFound", "Port %s could not be found.", p[1])
		}
		if len(p) >= 3 && p[2] == "tags" {
			return s.portTags(q, pt)
		}
		if len(p) != 2 {
			break
		}
		switch m {
		case http.MethodGet:
			return http.StatusOK, map[string]any{"port": s.portView(pt)}, nil
		case http.MethodPut:
			return s.updatePort(q, pt)
		case http.MethodDelete:
			if err := ifMatch(q, pt.revision); err != nil {
				return 0, nil, err
			}
			return s.deletePort(pt)
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}

// portFilter handles the port filters that are not plain attribute equality.
func portFilter(k string, vs []string, v map[string]any) (bool, bool) {
	switch k {
	case "fixed_ips":
		if v == nil {
			return false, true
		}
		ips, _ := v["fixed_ips"].([]map[string]string)
		for _, want := range vs { // each value: "ip_address=X" or "subnet_id=Y" (any matching IP)
			key, val, _ := strings.Cut(want, "=")
			found := false
			for _, ip := range ips {
				if ip[key] == val {
					found = true
				}
			}
			if !found {
				return false, true
			}
		}
		return true, true
	case "admin_state_up":
		if v == nil {
			return false, true
		}
		return boolFilter(vs, v[k].(bool)), true
	case "security_groups":
		if v == nil {
			return false, true
		}
		sgs, _ := v[k].([]string)
		for _, want := range vs {
			if slices.Contains(sgs, want) {
				return true, true
			}
		}
		return false, true
	}
	return false, false
}

// createPorts is POST /v2.0/ports, single ({"port":...}) or bulk ({"ports":[...]}): all or none.
func (s *Server) createPorts(q *request) (int, any, error) {
	var bodies []map[string]any
	_, bulk := q.body["ports"]
	if bulk {
		if err := decode(q.body, "ports", &bodies); err != nil {
			return 0, nil, err
		}
	} else {
		var b map[string]any
		if err := decode(q.body, "port", &b); err != nil {
			return 0, nil, err
		}
		bodies = []map[string]any{b}
	}
	quotaCount := map[string]int{}
	for _, b := range bodies {
		if proj, err := projectOf(b); err == nil {
			quotaCount[proj]++
		}
	}
	for proj, n := range quotaCount {
		if err := s.overPortQuota(proj, n); err != nil {
			return 0, nil, err
		}
	}
	var created []*port
	undo := func() {
		for _, p := range created {
			s.releaseIPs(p)
			delete(s.ports, p.id)
		}
	}
	for _, b := range bodies {
		p, err := s.newPort(b)
		if err != nil {
			undo()
			return 0, nil, err
		}
		created = append(created, p)
	}
	views := make([]map[string]any, len(created))
	for i, p := range created {
		views[i] = s.portView(p)
	}
	if bulk {
		return http.StatusCreated, map[string]any{"ports": views}, nil
	}
	return http.StatusCreated, map[string]any{"port": views[0]}, nil
}

// newPort validates one create body and stores the port; s.mu is held.
func (s *Server) newPort(b map[string]any) (*port, error) {
	if err := checkAttrs(b, portCreateAttrs...); err != nil {
		return nil, err
	}
	proj, err := projectOf(b)
	if err != nil {
		return nil, err
	}
	netID := str(b, "network_id")
	if netID == "" {
		return nil, badRequest("network_id is required")
	}
	if _, ok := s.networks[netID]; !ok {
		return nil, notFound("NetworkNotFound", "Network %s could not be found.", netID)
	}
	now := s.now()
	p := &port{id: newID(), name: str(b, "name"), networkID: netID, project: proj, deviceID: str(b, "device_id"),
		deviceOwner: str(b, "device_owner"), hostID: str(b, "binding:host_id"), desc: str(b, "description"),
		adminUp: true, revision: 1, created: now, updated: now}
	if up, ok := b["admin_state_up"].(bool); ok {
		p.adminUp = up
	}
	if p.sgs, err = strList(b, "security_groups"); err != nil {
		return nil, err
	}
	if _, given := b["security_groups"]; !given {
		p.sgs = []string{s.defaultSG(proj).id}
	}
	for _, id := range p.sgs {
		if _, ok := s.sgs[id]; !ok {
			return nil, notFound("SecurityGroupNotFound", "Security group %s does not exist", id)
		}
	}
	if mac := str(b, "mac_address"); mac != "" {
		for _, o := range s.ports {
			if o.networkID == netID && strings.EqualFold(o.mac, mac) {
				return nil, conflict("MacAddressInUse", "Unable to complete operation for network %s. The mac address %s is in use.", netID, mac)
			}
		}
		p.mac = strings.ToLower(mac)
	} else {
		s.macSeq++
		p.mac = fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", byte(s.macSeq>>16), byte(s.macSeq>>8), byte(s.macSeq))
	}
	if err := s.assignIPs(p, b["fixed_ips"]); err != nil {
		s.releaseIPs(p)
		return nil, err
	}
	if tags, err := strList(b, "tags"); err != nil {
		s.releaseIPs(p)
		return nil, err
	} else if len(tags) > 0 && s.ext["tag-ports-during-bulk-creation"] {
		if err := validTags(tags); err != nil {
			s.releaseIPs(p)
			return nil, err
		}
		p.tags = dedupe(tags)
		p.revision++ // Neutron tags the stored port: one more revision
	}
	s.ports[p.id] = p
	return p, nil
}

// assignIPs gives the port its fixed IPs: the requested ones, else one from the network's first
// IPv4 subnet; s.mu is held.
func (s *Server) assignIPs(p *port, raw any) error {
	if raw == nil {
		var first *subnet
		for _, sn := range s.subnets {
			if sn.networkID == p.networkID && (first == nil || sn.created.Before(first.created) ||
				(sn.created.Equal(first.created) && sn.id < first.id)) {
				first = sn
			}
		}
		if first == nil {
			return nil // a network without subnets: a port without addresses
		}
		a, err := first.allocate(p.id)
		if err != nil {
			return err
		}
		p.fixedIPs = []fixedIP{{subnetID: first.id, ip: a}}
		return nil
	}
	items, ok := raw.([]any)
	if !ok {
		return badRequest("Invalid data format for fixed IP: '%v'", raw)
	}
	for _, it := range items {
		m, _ := it.(map[string]any)
		sid, ipStr := str(m, "subnet_id"), str(m, "ip_address")
		var sn *subnet
		if sid != "" {
			if sn = s.subnets[sid]; sn == nil {
				return notFound("SubnetNotFound", "Subnet %s could not be found.", sid)
			}
			if sn.networkID != p.networkID {
				return badRequest("Failed to create port on network %s, because fixed_ips included invalid subnet %s.", p.networkID, sid)
			}
		}
		if ipStr != "" {
			a, err := netip.ParseAddr(ipStr)
			if err != nil {
				return badRequest("'%s' is not a valid IP address", ipStr)
			}
			if sn == nil {
				for _, c := range s.subnets {
					if c.networkID == p.networkID && c.prefix.Contains(a) {
						sn = c
					}
				}
				if sn == nil {
					return badRequest("IP address %s is not a valid IP for any subnet on network %s", a, p.networkID)
				}
			}
			if err := sn.take(a, p.id); err != nil {
				return err
			}
			p.fixedIPs = append(p.fixedIPs, fixedIP{subnetID: sn.id, ip: a})
			continue
		}
		if sn == nil {
			return badRequest("fixed_ips entry %v has neither subnet_id nor ip_address", m)
		}
		a, err := sn.allocate(p.id)
		if err != nil {
			return err
		}
		p.fixedIPs = append(p.fixedIPs, fixedIP{subnetID: sn.id, ip: a})
	}
	return nil
}

// releaseIPs frees the port's addresses; s.mu is held.
func (s *Server) releaseIPs(p *port) {
	for _, f := range p.fixedIPs {
		if sn := s.subnets[f.subnetID]; sn != nil && sn.used[f.ip] == p.id {
			delete(sn.used, f.ip)
		}
	}
}

// ifMatch checks an If-Match: revision_number=N header against the current revision.
func ifMatch(q *request, current int) error {
	h := q.r.Header.Get("If-Match")
	if h == "" {
		return nil
	}
	for _, c := range strings.Split(h, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(c), "revision_number=")
		if !ok {
			return badRequest("If-Match header %q: only revision_number=N is supported", h)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return badRequest("If-Match header %q", h)
		}
		if n != current {
			return errf(http.StatusPreconditionFailed, "RevisionNumberConstraintFailed",
				"Constrained to %d, but current revision is %d", n, current)
		}
	}
	return nil
}

func (s *Server) updatePort(q *request, p *port) (int, any, error) {
	var b map[string]any
	if err := decode(q.body, "port", &b); err != nil {
		return 0, nil, err
	}
	if err := checkAttrs(b, portUpdateAttrs...); err != nil {
		return 0, nil, err
	}
	if err := ifMatch(q, p.revision); err != nil {
		return 0, nil, err
	}
	np := *p
	if v, ok := b["name"]; ok {
		np.name, _ = v.(string)
	}
	if v, ok := b["device_id"]; ok {
		np.deviceID, _ = v.(string)
	}
	if v, ok := b["device_owner"]; ok {
		np.deviceOwner, _ = v.(string)
	}
	if v, ok := b["binding:host_id"]; ok {
		np.hostID, _ = v.(string)
	}
	if v, ok := b["description"]; ok {
		np.desc, _ = v.(string)
	}
	if v, ok := b["admin_state_up"].(bool); ok {
		np.adminUp = v
	}
	if _, ok := b["security_groups"]; ok {
		sgs, err := strList(b, "security_groups")
		if err != nil {
			return 0, nil, err
		}
		for _, id := range sgs {
			if _, ok := s.sgs[id]; !ok {
				return 0, nil, notFound("SecurityGroupNotFound", "Security group %s does not exist", id)
			}
		}
		np.sgs = dedupe(sgs)
	}
	if _, ok := b["fixed_ips"]; ok {
		return 0, nil, badRequest("fakeneutron does not change fixed_ips")
	}
	if np.name != p.name || np.deviceID != p.deviceID || np.deviceOwner != p.deviceOwner || np.hostID != p.hostID ||
		np.desc != p.desc || np.adminUp != p.adminUp || !slices.Equal(np.sgs, p.sgs) {
		np.revision++
		np.updated = s.now()
	}
	*p = np
	return http.StatusOK, map[string]any{"port": s.portView(p)}, nil
}

func (s *Server) deletePort(p *port) (int, any, error) {
	if p.deviceOwner == routerInterfaceOwner {
		return 0, nil, conflict("ServicePortInUse", "Port %s cannot be deleted directly via the port API: has device owner %s.", p.id, p.deviceOwner)
	}
	if t := s.trunkOfParent(p.id); t != nil {
		return 0, nil, conflict("PortInUseAsTrunkParent", "Port %s is currently a parent port for trunk %s.", p.id, t.id)
	}
	if t := s.trunkOfSubport(p.id); t != nil {
		return 0, nil, conflict("PortInUseAsSubPort", "Port %s is currently a subport for trunk %s.", p.id, t.id)
	}
	s.releaseIPs(p)
	delete(s.ports, p.id)
	return http.StatusNoContent, nil, nil
}

// portTags serves /v2.0/ports/{id}/tags[/{tag}] (standard-attr-tag).
func (s *Server) portTags(q *request, p *port) (int, any, error) {
	parts := q.parts
	switch {
	case len(parts) == 3 && q.r.Method == http.MethodGet:
		return http.StatusOK, map[string]any{"tags": slices.Clone(p.tags)}, nil
	case len(parts) == 3 && q.r.Method == http.MethodPut:
		var tags []string
		if err := decode(q.body, "tags", &tags); err != nil {
			return 0, nil, err
		}
		if err := validTags(tags); err != nil {
			return 0, nil, err
		}
		p.tags = dedupe(tags)
		p.revision++
		return http.StatusOK, map[string]any{"tags": slices.Clone(p.tags)}, nil
	case len(parts) == 3 && q.r.Method == http.MethodDelete:
		p.tags = nil
		p.revision++
		return http.StatusNoContent, nil, nil
	case len(parts) == 4:
		tag := parts[3]
		switch q.r.Method {
		case http.MethodGet:
			if !slices.Contains(p.tags, tag) {
				return 0, nil, notFound("TagNotFound", "Tag %s could not be found.", tag)
			}
			return http.StatusNoContent, nil, nil
		case http.MethodPut:
			if err := validTags([]string{tag}); err != nil {
				return 0, nil, err
			}
			if !slices.Contains(p.tags, tag) {
				p.tags = append(p.tags, tag)
				p.revision++
			}
			return http.StatusCreated, nil, nil
		case http.MethodDelete:
			i := slices.Index(p.tags, tag)
			if i < 0 {
				return 0, nil, notFound("TagNotFound", "Tag %s could not be found.", tag)
			}
			p.tags = slices.Delete(p.tags, i, i+1)
			p.revision++
			return http.StatusNoContent, nil, nil
		}
	}
	return 0, nil, errf(http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The method is not allowed for this resource.")
}

func validTags(tags []string) error {
	for _, t := range tags {
		if t == "" || len(t) > 255 || strings.Contains(t, ",") {
			return badRequest("'%s' is not a valid tag", t)
		}
	}
	return nil
}

func dedupe(s []string) []string {
	out := make([]string, 0, len(s))
	for _, x := range s {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// PortCount is the number of ports the server holds (a leak check for tests).
func (s *Server) PortCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ports)
}
