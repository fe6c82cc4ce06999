package fullnode

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/netns"
)

// TestFullNodeL2Agent is issue 7 §6: the same node, bare metal, with a real
// neutron-openvswitch-agent on the userspace OVS instead of an emulated one. Every pod's port turns
// ACTIVE (the agent saw the veth kuryr plugged into its bridge, tagged it and wired its flows and
// security groups), and two pods reach each other over TCP through that bridge.
func TestFullNodeL2Agent(t *testing.T) {
	e := newL2Env(t)
	s := startScenario(t, e)
	const n = 3
	ctx := context.Background()
	active := watchActive(t, e)
	t0 := time.Now()
	s.createDeployment(t, n)
	s.pods = s.waitRunning(t, n, 5*time.Minute)
	t.Logf("%d pods Running %s after the Deployment was created; %s", n, time.Since(t0).Round(time.Millisecond), s.clock.latencies(s.pods))
	s.checkConsistent(t, 30*time.Second)

	ports, err := e.hostPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	portOf := map[string]string{} // pod name -> port ID
	for _, p := range s.pods {
		for _, port := range ports {
			if port.Name == p.Namespace+"/"+p.Name {
				portOf[p.Name] = port.ID
			}
		}
	}
	eventually(t, 2*time.Minute, "every pod's port ACTIVE", func() (bool, string) {
		var waiting []string
		for _, p := range s.pods {
			if _, ok := active.at(portOf[p.Name]); !ok {
				waiting = append(waiting, p.Name)
			}
		}
		return len(waiting) == 0, "not ACTIVE yet: " + strings.Join(waiting, " ")
	})
	for _, p := range s.pods {
		s.clock.mu.Lock()
		seen, running := s.clock.seen[p.Name], s.clock.running[p.Name]
		s.clock.mu.Unlock()
		at, _ := active.at(portOf[p.Name])
		t.Logf("pod %s: Running %s after it was created; its port ACTIVE %s after it was created (%s relative to Running, whose status update may come later; polled every 200ms)",
			p.Name, running.Sub(seen).Round(time.Millisecond), at.Sub(seen).Round(time.Millisecond), at.Sub(running).Round(time.Millisecond))
	}

	// The agent, not kuryr, gives a bound port's OVS port its local VLAN tag.
	for _, p := range s.pods {
		for _, port := range ports {
			if port.Name != p.Namespace+"/"+p.Name {
				continue
			}
			if port.VIFType != "ovs" || port.VIFDetails.BridgeName != e.node.L2Bridge {
				t.Errorf("port %s of pod %s: vif_type %q, bridge %v; want ovs on %s", port.ID, p.Name, port.VIFType, port.VIFDetails.BridgeName, e.node.L2Bridge)
			}
			dev := netns.HostIfName(port.ID)
			out, err := exec.Command("ovs-vsctl", "--db="+e.ovsdb, "--timeout=10", "port-to-br", dev).CombinedOutput()
			if br := strings.TrimSpace(string(out)); err != nil || br != e.node.L2Bridge {
				t.Errorf("pod %s: %s is on OVS bridge %q (%v), want %s", p.Name, dev, br, err, e.node.L2Bridge)
			}
			out, err = exec.Command("ovs-vsctl", "--db="+e.ovsdb, "--timeout=10", "get", "Port", dev, "tag").CombinedOutput()
			if tag := strings.TrimSpace(string(out)); err != nil || tag == "[]" {
				t.Errorf("pod %s: OVS port %s has no local VLAN tag from the L2 agent: %q %v", p.Name, dev, tag, err)
			}
		}
	}
	t.Run("PodToPodTCP", s.podToPodTCP)
	if t.Failed() {
		t.Logf("L2 agent log (%s):\n%s", e.node.L2AgentLog, fileTail(e.node.L2AgentLog, 30))
	}
}

// activeWatch records when each of the host's ports was first seen ACTIVE, polling Neutron every
// 200 ms from its start until the test ends.
type activeWatch struct {
	mu    sync.Mutex
	first map[string]time.Time
}

func watchActive(t *testing.T, e *env) *activeWatch {
	w := &activeWatch{first: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if ports, err := e.hostPorts(ctx); err == nil {
				now := time.Now()
				w.mu.Lock()
				for _, p := range ports {
					if _, ok := w.first[p.ID]; !ok && p.Status == "ACTIVE" {
						w.first[p.ID] = now
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *activeWatch) at(portID string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.first[portID]
	return at, ok
}
