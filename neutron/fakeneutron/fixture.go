package fakeneutron

import (
	"encoding/json"
	"fmt"
	"os"
)

// Fixture is the test fixture written by hack/neutron-up.sh to fixture.json, or built in process
// by Server.Fixture: the same objects on the real server and on the stand-in.
type Fixture struct {
	Endpoint         string         `json:"endpoint"`
	Project          string         `json:"project"`
	PodNetwork       string         `json:"podNetwork"`
	PodSubnet        string         `json:"podSubnet"`
	PodSubnetCIDR    string         `json:"podSubnetCIDR"`
	WorkerNetwork    string         `json:"workerNetwork"`
	WorkerSubnet     string         `json:"workerSubnet"`
	WorkerSubnetCIDR string         `json:"workerSubnetCIDR"`
	SecurityGroups   []string       `json:"securityGroups"`
	Trunks           []FixtureTrunk `json:"trunks"`
	// BareMetalHosts have an (emulated) OVS agent: ports bound there get binding:vif_type ovs.
	BareMetalHosts []string `json:"bareMetalHosts"`
	// PodRouter is a router for [namespace_subnet] pod_router (the real server's L3 plugin).
	PodRouter string `json:"podRouter"`
}

// FixtureTrunk is one "VM": its parent port on the worker subnet and its trunk.
type FixtureTrunk struct {
	Name       string `json:"name"`
	IP         string `json:"ip"`
	ParentPort string `json:"parentPort"`
	Trunk      string `json:"trunk"`
}

// LoadFixture reads a fixture.json.
func LoadFixture(path string) (Fixture, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Fixture{}, fmt.Errorf("read neutron fixture: %w", err)
	}
	var f Fixture
	if err := json.Unmarshal(b, &f); err != nil {
		return Fixture{}, fmt.Errorf("parse neutron fixture %s: %w", path, err)
	}
	if f.Endpoint == "" || f.Project == "" || f.PodSubnet == "" || f.WorkerSubnet == "" || len(f.Trunks) == 0 || len(f.BareMetalHosts) == 0 {
		return Fixture{}, fmt.Errorf("neutron fixture %s is incomplete (endpoint, project, podSubnet, workerSubnet, trunks, bareMetalHosts): re-run hack/neutron-up.sh", path)
	}
	return f, nil
}

// Fixture builds in process what hack/neutron-up.sh builds on the real server, idempotently (objects
// are found by name): the pod network and subnet 10.10.0.0/16, the worker network and subnet
// 192.168.0.0/24, three parent ports 192.168.0.11-13 with trunks, and the project's default security
// group plus "kuryr-test-sg", and the bare-metal hosts kuryr-test-bm1 and kuryr-test-bm2 with an
// agent. Endpoint is the server's URL (empty before Start).
func (s *Server) Fixture(project string) (Fixture, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byName := func(kind, name string) string {
		switch kind {
		case "network":
			for _, n := range s.networks {
				if n.name == name && n.project == project {
					return n.id
				}
			}
		case "subnet":
			for _, sn := range s.subnets {
				if sn.name == name && sn.project == project {
					return sn.id
				}
			}
		case "port":
			for _, p := range s.ports {
				if p.name == name && p.project == project {
					return p.id
				}
			}
		case "trunk":
			for _, t := range s.trunks {
				if t.name == name && t.project == project {
					return t.id
				}
			}
		case "sg":
			for _, g := range s.sgs {
				if g.name == name && g.project == project {
					return g.id
				}
			}
		}
		return ""
	}
	ensureNet := func(name string) string {
		if id := byName("network", name); id != "" {
			return id
		}
		n := &network{id: newID(), name: name, project: project, mtu: 1450, adminUp: true, revision: 1,
			created: s.now(), updated: s.now()}
		s.networks[n.id] = n
		return n.id
	}
	ensureSubnet := func(name, netID, cidr, gw string, dns []any) (string, error) {
		if id := byName("subnet", name); id != "" {
			return id, nil
		}
		sn, err := s.newSubnet(map[string]any{"name": name, "project_id": project, "network_id": netID,
			"cidr": cidr, "ip_version": float64(4), "gateway_ip": gw, "dns_nameservers": dns})
		if err != nil {
			return "", err
		}
		return sn.id, nil
	}
	f := Fixture{Endpoint: s.url, Project: project, PodSubnetCIDR: "10.10.0.0/16", WorkerSubnetCIDR: "192.168.0.0/24"}
	var err error
	f.BareMetalHosts = []string{"kuryr-test-bm1", "kuryr-test-bm2"}
	for _, h := range f.BareMetalHosts {
		s.agents[h] = true
	}
	f.PodNetwork = ensureNet("kuryr-test-pod-net")
	if f.PodSubnet, err = ensureSubnet("kuryr-test-pod-subnet", f.PodNetwork, f.PodSubnetCIDR, "10.10.0.1", []any{"10.10.0.2"}); err != nil {
		return Fixture{}, fmt.Errorf("fixture pod subnet: %w", err)
	}
	f.WorkerNetwork = ensureNet("kuryr-test-worker-net")
	if f.WorkerSubnet, err = ensureSubnet("kuryr-test-worker-subnet", f.WorkerNetwork, f.WorkerSubnetCIDR, "192.168.0.1", nil); err != nil {
		return Fixture{}, fmt.Errorf("fixture worker subnet: %w", err)
	}
	f.SecurityGroups = []string{s.defaultSG(project).id}
	extra := byName("sg", "kuryr-test-sg")
	if extra == "" {
		g := &secGroup{id: newID(), name: "kuryr-test-sg", project: project, description: "kuryr-pools tests",
			revision: 1, created: s.now()}
		s.sgs[g.id] = g
		extra = g.id
	}
	f.SecurityGroups = append(f.SecurityGroups, extra)
	for i, node := range []string{"node1", "node2", "node3"} {
		ip := fmt.Sprintf("192.168.0.%d", 11+i)
		parentID := byName("port", "kuryr-test-"+node+"-parent")
		if parentID == "" {
			p, err := s.newPort(map[string]any{"name": "kuryr-test-" + node + "-parent", "project_id": project,
				"network_id": f.WorkerNetwork, "device_owner": "compute:nova", "device_id": "kuryr-test-vm-" + node,
				"fixed_ips": []any{map[string]any{"subnet_id": f.WorkerSubnet, "ip_address": ip}}})
			if err != nil {
				return Fixture{}, fmt.Errorf("fixture parent port of %s: %w", node, err)
			}
			parentID = p.id
		}
		trunkID := byName("trunk", "kuryr-test-"+node+"-trunk")
		if trunkID == "" {
			t := &trunk{id: newID(), name: "kuryr-test-" + node + "-trunk", project: project, portID: parentID,
				created: s.now(), updated: s.now()}
			s.trunks[t.id] = t
			trunkID = t.id
		}
		f.Trunks = append(f.Trunks, FixtureTrunk{Name: node, IP: ip, ParentPort: parentID, Trunk: trunkID})
	}
	return f, nil
}
