package fullnode

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
	"github.com/kuryr-pools/kuryr/test/invariant"
)

const (
	// replicas of the Deployment. The manifest's pool (min 5, batch 10) creates one batch of 10 for
	// them and then has 5 free: no refill is due when the same pods come back.
	replicas = 5
	// staleLabel marks this suite's namespaces, so a run deletes what a killed run left behind.
	staleLabel = "kuryr-test-fullnode"
	appLabel   = "kuryr-fullnode"
	deployName = "workload"
)

// TestFullNode is issue 7's end to end on one real node, in steps that build on each other:
// a Deployment's pods run with their Neutron ports; scaled to zero their ports go back to the pool
// and come back without a Neutron create; the agent killed during a scale-up loses nothing.
func TestFullNode(t *testing.T) {
	s := startScenario(t, newEnv(t))
	if !t.Run("Deployment", s.deployment) {
		return
	}
	if !t.Run("ScaleToZeroAndBack", s.scaleToZeroAndBack) {
		return
	}
	if !t.Run("PodToPodTCP", s.podToPodTCP) {
		return
	}
	t.Run("AgentKilledDuringScaleUp", s.agentKilledDuringScaleUp)
}

// startScenario starts the node's agent against e's Neutron, waits for the node to be Ready and
// makes a namespace for the test's pods. Cleanups run in reverse: the pods go while the agent
// still answers their DELs, then the agent stops, then the host's ports are deleted.
func startScenario(t *testing.T, e *env) *scenario {
	t.Helper()
	ctx := context.Background()
	// Start from a host without ports (a killed run may have left some), and leave none.
	e.deleteHostPorts(t)
	t.Cleanup(func() { e.deleteHostPorts(t) })
	a := newAgent(t, e)
	ready := a.start()
	t.Logf("agent ready in %s", ready.Round(time.Millisecond))
	checkInstalled(t, a)
	t0 := time.Now()
	waitNodeReady(t, e)
	t.Logf("node %s Ready %s after the agent (conflist installed, containerd and kubelet noticed)", e.node.Name, time.Since(t0).Round(time.Millisecond))
	deleteStaleNamespaces(t, e)

	namespace := fmt.Sprintf("kuryr-fullnode-%d", time.Now().UnixNano()%1000000)
	if _, err := e.kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace,
		Labels: map[string]string{staleLabel: "true"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNamespace(t, e, namespace) })
	return &scenario{t: t, e: e, a: a, ns: namespace, clock: watchPods(t, e, namespace)}
}

type scenario struct {
	t     *testing.T
	e     *env
	a     *agentProc
	ns    string
	clock *podClock
	pods  []corev1.Pod // the Running pods after the last step
}

func (s *scenario) deployment(t *testing.T) {
	ctx := context.Background()
	creates := s.a.portCreates(t)
	adds := s.addsSince(t)
	t0 := time.Now()
	s.createDeployment(t, replicas)
	// The first pods wait for a refill: on a neutron-server loaded by the other suites a bulk
	// create has taken over a minute, and the driver retries after its one-minute timeout.
	s.pods = s.waitRunning(t, replicas, 5*time.Minute)
	t.Logf("%d pods Running %s after the Deployment was created; %s; %s", replicas, time.Since(t0).Round(time.Millisecond), s.clock.latencies(s.pods), adds())
	s.checkConsistent(t, 30*time.Second)
	t.Logf("Neutron port create requests for the first pods (empty pool): %d", s.a.portCreates(t)-creates)
	ports, err := s.e.hostPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]int{}
	for _, p := range ports {
		status[p.Status+"/"+p.VIFType]++
	}
	// The emulated L2 agent of hack/neutron-up.sh makes them bind (vif_type ovs) but never reports
	// them up: DOWN. TestFullNodeL2Agent has the real agent.
	t.Logf("Neutron port status/vif_type of the host's %d ports: %v", len(ports), status)
}

// createDeployment creates the workload Deployment with n pods on the node.
func (s *scenario) createDeployment(t *testing.T, n int) {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: deployName},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(n)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": appLabel}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": appLabel}},
				Spec: corev1.PodSpec{
					// No scheduler runs: the pods are bound to the node by their template.
					NodeName:                      s.e.node.Name,
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name: "workload", Image: s.e.node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					}},
				},
			},
		},
	}
	if _, err := s.e.kc.AppsV1().Deployments(s.ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// addsSince returns a function that describes the agent's successful ADDs since now.
func (s *scenario) addsSince(t *testing.T) func() string {
	n0, d0 := s.a.addTime(t)
	return func() string {
		n, d := s.a.addTime(t)
		if n == n0 {
			return "no ADD answered"
		}
		return fmt.Sprintf("agent ADD mean %s over %d ADDs", ((d - d0) / time.Duration(n-n0)).Round(time.Microsecond), n-n0)
	}
}

func (s *scenario) scaleToZeroAndBack(t *testing.T) {
	ctx := context.Background()
	before, err := s.e.hostPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inUse := map[string]bool{}
	for _, p := range s.pods {
		for _, port := range before {
			if port.Name == p.Namespace+"/"+p.Name {
				inUse[port.ID] = true
			}
		}
	}
	t0 := time.Now()
	s.scale(t, 0)
	s.waitNoPods(t, 2*time.Minute)
	gone := time.Since(t0)
	s.waitRecycled(t, inUse, time.Minute)
	t.Logf("scale to 0: pods gone in %s, their %d ports back as %s in %s", gone.Round(time.Millisecond), len(inUse), pool.AvailablePortName, time.Since(t0).Round(time.Millisecond))

	creates := s.a.portCreates(t)
	adds := s.addsSince(t)
	t0 = time.Now()
	s.scale(t, replicas)
	s.pods = s.waitRunning(t, replicas, 3*time.Minute)
	t.Logf("scale to %d: all Running in %s; %s; %s", replicas, time.Since(t0).Round(time.Millisecond), s.clock.latencies(s.pods), adds())
	s.checkConsistent(t, 30*time.Second)
	if n := s.a.portCreates(t) - creates; n != 0 {
		t.Errorf("scale-up from the pool made %d Neutron port create requests, want 0", n)
	}
	after, err := s.e.hostPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := portIDs(after), portIDs(before); !slices.Equal(got, want) {
		t.Errorf("the host's ports changed over scale to 0 and back:\n before %v\n after  %v", want, got)
	}
}

// podToPodTCP: two pods reach each other's workload over TCP through br-int of the userspace OVS
// (NORMAL switching: no L2 agent programs it); each answers with its own name.
func (s *scenario) podToPodTCP(t *testing.T) {
	atts, err := s.a.attachments()
	if err != nil {
		t.Fatal(err)
	}
	netnsOf := map[string]string{}
	for _, a := range atts {
		netnsOf[a.Pod.Namespace+"/"+a.Pod.Name] = a.Netns
	}
	for _, pair := range [][2]corev1.Pod{{s.pods[0], s.pods[1]}, {s.pods[1], s.pods[0]}} {
		from, to := pair[0], pair[1]
		path := netnsOf[from.Namespace+"/"+from.Name]
		if path == "" {
			t.Fatalf("no checkpoint attachment for pod %s", from.Name)
		}
		var got string
		t0 := time.Now()
		err := ns.WithNetNSPath(path, func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(to.Status.PodIP, "8080"), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			got, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		if err != nil {
			t.Fatalf("TCP from pod %s (%s) to pod %s (%s:8080): %v", from.Name, from.Status.PodIP, to.Name, to.Status.PodIP, err)
		}
		if strings.TrimSpace(got) != to.Name {
			t.Errorf("TCP from pod %s to %s:8080 answered %q, want %q", from.Name, to.Status.PodIP, got, to.Name)
		}
		t.Logf("TCP %s -> %s (%s): %q in %s", from.Name, to.Name, to.Status.PodIP, strings.TrimSpace(got), time.Since(t0).Round(time.Microsecond))
	}
}

// agentKilledDuringScaleUp: SIGKILL the agent while a scale-up's ADDs are in flight and start it
// again, as the DaemonSet would: every pod ends Running, and no port is leaked or shared.
func (s *scenario) agentKilledDuringScaleUp(t *testing.T) {
	ctx := context.Background()
	before, err := s.e.hostPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inUse := map[string]bool{}
	for _, port := range before {
		if port.Name != pool.AvailablePortName {
			inUse[port.ID] = true
		}
	}
	s.scale(t, 0)
	s.waitNoPods(t, 2*time.Minute)
	s.waitRecycled(t, inUse, time.Minute)

	t0 := time.Now()
	s.scale(t, replicas)
	// Kill as soon as the first ADD reached the agent: the checkpoint holds an attachment.
	eventually(t, time.Minute, "a first attachment in the checkpoint", func() (bool, string) {
		atts, err := s.a.attachments()
		if err != nil {
			return false, err.Error()
		}
		return len(atts) > 0, fmt.Sprint(len(atts), " attachments")
	})
	atts, _ := s.a.attachments()
	running := s.runningNow()
	s.a.stop(syscall.SIGKILL)
	killed := time.Since(t0)
	ready := s.a.start()
	t.Logf("agent SIGKILLed %s into the scale-up (%d attachments checkpointed, %d of %d pods Running), ready again in %s",
		killed.Round(time.Millisecond), len(atts), running, replicas, ready.Round(time.Millisecond))
	s.pods = s.waitRunning(t, replicas, 4*time.Minute)
	t.Logf("scale to %d across the agent restart: all Running in %s; %s", replicas, time.Since(t0).Round(time.Millisecond), s.clock.latencies(s.pods))
	s.checkConsistent(t, time.Minute)
}

// runningNow counts the Deployment's pods Running now.
func (s *scenario) runningNow() int {
	list, err := s.e.kc.CoreV1().Pods(s.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + appLabel})
	if err != nil {
		return -1
	}
	n := 0
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			n++
		}
	}
	return n
}

func (s *scenario) scale(t *testing.T, n int) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n)
	if _, err := s.e.kc.AppsV1().Deployments(s.ns).Patch(context.Background(), deployName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitRunning waits until the Deployment has exactly n pods, all Running with an IP and none
// terminating, and returns them sorted by name.
func (s *scenario) waitRunning(t *testing.T, n int, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, timeout, fmt.Sprintf("%d pods Running", n), func() (bool, string) {
		list, err := s.e.kc.CoreV1().Pods(s.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + appLabel})
		if err != nil {
			return false, err.Error()
		}
		pods = list.Items
		var states []string
		ok := len(pods) == n
		for _, p := range pods {
			states = append(states, fmt.Sprintf("%s=%s/%s%s", p.Name, p.Status.Phase, p.Status.PodIP, waiting(p)))
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
				ok = false
			}
		}
		return ok, strings.Join(states, " ")
	})
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods
}

// waiting says why a pod's container is not running yet (the sandbox errors show up as Events).
func waiting(p corev1.Pod) string {
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil {
			return "(" + c.State.Waiting.Reason + ")"
		}
	}
	return ""
}

func (s *scenario) waitNoPods(t *testing.T, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "no pod left", func() (bool, string) {
		list, err := s.e.kc.CoreV1().Pods(s.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(list.Items) == 0, fmt.Sprint(len(list.Items), " pods")
	})
}

// waitRecycled waits until every port in ids is back in the pool: named available-port in
// Neutron, no device_id, and the agent holds nothing in use or cooling.
func (s *scenario) waitRecycled(t *testing.T, ids map[string]bool, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	eventually(t, timeout, "the pods' ports back in the pool", func() (bool, string) {
		ports, err := s.e.hostPorts(ctx)
		if err != nil {
			return false, err.Error()
		}
		var notYet []string
		seen := 0
		for _, p := range ports {
			if !ids[p.ID] {
				continue
			}
			seen++
			if p.Name != pool.AvailablePortName || p.DeviceID != "" {
				notYet = append(notYet, fmt.Sprintf("%s name=%q device_id=%q", p.ID, p.Name, p.DeviceID))
			}
		}
		if seen != len(ids) {
			return false, fmt.Sprintf("%d of the %d ports are gone from Neutron", len(ids)-seen, len(ids))
		}
		if len(notYet) > 0 {
			return false, strings.Join(notYet, "; ")
		}
		pools, err := s.a.pools(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pools {
			if p.InUse != 0 || p.Cooling != 0 {
				return false, fmt.Sprintf("pool %s/%s: %d in use, %d cooling", p.Project, p.Network, p.InUse, p.Cooling)
			}
		}
		return true, ""
	})
}

// checkConsistent waits until Neutron, the agent, the runtime and the pods agree, and fails with
// the last disagreement: each pod has one port, named after it, with its UID as device_id and the
// pod's IP; no port or IP serves two pods; every other port of the host is a free pool port
// (available-port) and the agent's pools count exactly those; the checkpoint holds one attachment
// per pod, on that pod's port; and test/invariant's checks hold with containerd's running
// sandboxes as the live containers.
func (s *scenario) checkConsistent(t *testing.T, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "pods, Neutron ports and the agent agree", func() (bool, string) {
		problems := s.consistency(context.Background())
		return len(problems) == 0, strings.Join(problems, "; ")
	})
	t.Logf("consistent: %d pods, each on its own port with its IP; every other port of %s free in the pool", len(s.pods), s.e.node.Name)
}

func (s *scenario) consistency(ctx context.Context) []string {
	var problems []string
	ports, err := s.e.hostPorts(ctx)
	if err != nil {
		return []string{err.Error()}
	}
	byName := map[string][]neutronPort{}
	free := 0
	for _, p := range ports {
		if p.Name == pool.AvailablePortName {
			free++
			if p.DeviceID != "" {
				problems = append(problems, fmt.Sprintf("free port %s has device_id %q", p.ID, p.DeviceID))
			}
			continue
		}
		var ip string
		if len(p.FixedIPs) > 0 {
			ip = p.FixedIPs[0].IPAddress
		}
		byName[p.Name] = append(byName[p.Name], neutronPort{id: p.ID, ip: ip, deviceID: p.DeviceID})
	}
	podIPs := map[string]string{}
	portOf := map[string]string{} // pod key -> port ID
	for _, pod := range s.pods {
		key := pod.Namespace + "/" + pod.Name
		if other, dup := podIPs[pod.Status.PodIP]; dup {
			problems = append(problems, fmt.Sprintf("pods %s and %s share IP %s", other, key, pod.Status.PodIP))
		}
		podIPs[pod.Status.PodIP] = key
		ps := byName[key]
		delete(byName, key)
		if len(ps) != 1 {
			problems = append(problems, fmt.Sprintf("pod %s has %d ports named after it, want 1", key, len(ps)))
			continue
		}
		portOf[key] = ps[0].id
		if ps[0].ip != pod.Status.PodIP {
			problems = append(problems, fmt.Sprintf("pod %s has IP %s, its port %s has %s", key, pod.Status.PodIP, ps[0].id, ps[0].ip))
		}
		if ps[0].deviceID != string(pod.UID) {
			problems = append(problems, fmt.Sprintf("port %s of pod %s has device_id %q, want the pod's UID %s", ps[0].id, key, ps[0].deviceID, pod.UID))
		}
	}
	for name, ps := range byName {
		for _, p := range ps {
			problems = append(problems, fmt.Sprintf("leaked: port %s named %q (no such pod) ip %s", p.id, name, p.ip))
		}
	}
	pools, err := s.a.pools(ctx)
	if err != nil {
		return append(problems, err.Error())
	}
	var agentFree, agentInUse, agentCooling int
	for _, p := range pools {
		agentFree += p.Free
		agentInUse += p.InUse
		agentCooling += p.Cooling
	}
	if agentFree != free || agentInUse != len(s.pods) || agentCooling != 0 {
		problems = append(problems, fmt.Sprintf("agent pools: %d free, %d in use, %d cooling; Neutron: %d available-port, %d pods",
			agentFree, agentInUse, agentCooling, free, len(s.pods)))
	}
	atts, err := s.a.attachments()
	if err != nil {
		return append(problems, err.Error())
	}
	held := map[string]string{}
	for _, a := range atts {
		key := a.Pod.Namespace + "/" + a.Pod.Name
		if other, dup := held[a.Port.ID]; dup {
			problems = append(problems, fmt.Sprintf("port %s checkpointed for %s and %s", a.Port.ID, other, key))
		}
		held[a.Port.ID] = key
		if want, ok := portOf[key]; ok && want != a.Port.ID {
			problems = append(problems, fmt.Sprintf("checkpoint: pod %s on port %s, Neutron names port %s after it", key, a.Port.ID, want))
		}
	}
	if len(atts) != len(s.pods) {
		problems = append(problems, fmt.Sprintf("checkpoint: %d attachments for %d pods", len(atts), len(s.pods)))
	}
	// The node-level promises, with the runtime's sandboxes as the live containers: no port leaked,
	// shared or untagged, every sandbox's interface as its port says, no stale host link.
	live, err := s.e.liveSandboxes(ctx)
	if err != nil {
		return append(problems, err.Error())
	}
	if len(live) != len(s.pods) {
		problems = append(problems, fmt.Sprintf("containerd runs %d pod sandboxes for %d pods", len(live), len(s.pods)))
	}
	r, err := invariant.Check(ctx, invariant.Options{Neutron: s.e.nc, Node: s.e.node.Name, Cluster: s.a.cluster, NetworkID: s.e.fx.PodNetwork,
		Checkpoint: s.a.checkpoint, ManageSocket: s.a.manageSock, Live: live, OVSDB: s.e.ovsdb, OVSBridge: s.e.bridge, PodNamespace: s.ns})
	if err != nil {
		return append(problems, err.Error())
	}
	if !r.OK() {
		problems = append(problems, "invariant: "+r.String())
	}
	return problems
}

type neutronPort struct{ id, ip, deviceID string }

func portIDs(ports []neutron.Port) []string {
	ids := make([]string, 0, len(ports))
	for _, p := range ports {
		ids = append(ids, p.ID)
	}
	sort.Strings(ids)
	return ids
}

// checkInstalled: the agent's install step put kuryr-cni (executable) and daemonset's conflist,
// with this test's socket, into the node's CNI directories.
func checkInstalled(t *testing.T, a *agentProc) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(a.cniBin, "kuryr-cni"))
	if err != nil {
		t.Fatalf("kuryr-cni not installed: %v", err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("installed kuryr-cni is not executable: %v", fi.Mode())
	}
	// The agent reports ready, then writes the conflist (never the other way round): give it a moment.
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, err = os.ReadFile(filepath.Join(a.cniConf, "10-kuryr.conflist")); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("conflist not installed within 10 s of ready: %v", err)
	}
	if !strings.Contains(string(b), a.cniSocket) {
		t.Errorf("installed conflist does not name the agent's socket %s: %s", a.cniSocket, b)
	}
}

func waitNodeReady(t *testing.T, e *env) {
	t.Helper()
	eventually(t, 2*time.Minute, "Node "+e.node.Name+" Ready", func() (bool, string) {
		n, err := e.kc.CoreV1().Nodes().Get(context.Background(), e.node.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, c.Reason + ": " + c.Message
			}
		}
		return false, "no Ready condition"
	})
}

// deleteStaleNamespaces deletes the namespaces a killed run left behind, now that an agent
// answers their pods' DELs.
func deleteStaleNamespaces(t *testing.T, e *env) {
	t.Helper()
	list, err := e.kc.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{LabelSelector: staleLabel})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list.Items {
		t.Logf("deleting namespace %s of an earlier run", n.Name)
		deleteNamespace(t, e, n.Name)
	}
}

// deleteNamespace deletes the namespace and waits until it is gone: kube-controller-manager's
// namespace controller deletes its Deployment, ReplicaSet and pods (no new ones are admitted in a
// terminating namespace), and the kubelet tears the pods down through kuryr-cni DELs.
func deleteNamespace(t *testing.T, e *env, name string) {
	ctx := context.Background()
	if err := e.kc.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("cleanup: delete namespace %s: %v", name, err)
		return
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := e.kc.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			pods, _ := e.kc.CoreV1().Pods(name).List(ctx, metav1.ListOptions{})
			t.Errorf("cleanup: namespace %s still there after 2m with %d pods (kubelet log: %s)", name, len(pods.Items), fileTail(e.node.KubeletLog, 20))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// podClock records when each pod was first seen and first seen Running with an IP, from a watch.
type podClock struct {
	mu      sync.Mutex
	seen    map[string]time.Time
	running map[string]time.Time
}

func watchPods(t *testing.T, e *env, namespace string) *podClock {
	c := &podClock{seen: map[string]time.Time{}, running: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			list, err := e.kc.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				time.Sleep(time.Second)
				continue
			}
			for i := range list.Items {
				c.record(&list.Items[i])
			}
			w, err := e.kc.CoreV1().Pods(namespace).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
			if err != nil {
				time.Sleep(time.Second)
				continue
			}
			for ev := range w.ResultChan() {
				if p, ok := ev.Object.(*corev1.Pod); ok {
					c.record(p)
				}
			}
			w.Stop()
		}
	}()
	return c
}

func (c *podClock) record(p *corev1.Pod) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[p.Name]; !ok {
		c.seen[p.Name] = now
	}
	if _, ok := c.running[p.Name]; !ok && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
		c.running[p.Name] = now
	}
}

// latencies describes, for pods, the time from creation (seen by the watch) to Running.
func (c *podClock) latencies(pods []corev1.Pod) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Duration
	for _, p := range pods {
		s, ok1 := c.seen[p.Name]
		r, ok2 := c.running[p.Name]
		if ok1 && ok2 {
			ds = append(ds, r.Sub(s))
		}
	}
	if len(ds) == 0 {
		return "no pod latency recorded"
	}
	slices.Sort(ds)
	return fmt.Sprintf("pod created -> Running: min %s, p50 %s, max %s (%d pods)", ds[0].Round(time.Millisecond),
		ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), len(ds))
}
