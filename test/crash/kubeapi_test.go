package crash

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kuryr-pools/kuryr/agent"
	"github.com/kuryr-pools/kuryr/manage"
	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// apiProxy is a TCP proxy in front of the kube-apiserver that the test turns off (connections
// refused), makes hang (connections accepted, never answered: a stuck API server) or on again.
type apiProxy struct {
	target string
	addr   string

	mu    sync.Mutex
	l     net.Listener
	hang  bool
	conns map[net.Conn]bool
}

func newAPIProxy(t *testing.T, target string) *apiProxy {
	t.Helper()
	p := &apiProxy{target: target, conns: map[net.Conn]bool{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	p.serve(l)
	t.Cleanup(p.down)
	return p
}

func (p *apiProxy) serve(l net.Listener) {
	p.l = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = true
			hang := p.hang
			p.mu.Unlock()
			if !hang {
				go p.pipe(c)
			}
		}
	}()
}

func (p *apiProxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[up] = true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

// closeConns cuts every connection, so that clients have to connect again.
func (p *apiProxy) closeConnsLocked() {
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// down refuses connections.
func (p *apiProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	p.closeConnsLocked()
}

// setHang makes new connections hang (true) or work again (false), listening again if down.
func (p *apiProxy) setHang(t *testing.T, hang bool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hang = hang
	p.closeConnsLocked()
	if p.l == nil {
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		p.serve(l)
	}
}

// TestKubeAPIDown runs the agent against the real kube-apiserver through a proxy the test stops:
// while the API server hangs and then refuses connections, ADD and DEL go on from the local pool
// and the checkpoint (one ADD even waits for a refill, which needs Neutron only); once it is back,
// the pods' port annotations and the agent's Events catch up.
func TestKubeAPIDown(t *testing.T) {
	t.Parallel()
	kubeconfig := testutil.Kubeconfig(t)
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	raw, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*raw, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	server, err := url.Parse(rc.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newAPIProxy(t, server.Host)
	for _, c := range raw.Clusters {
		c.Server = "https://" + proxy.addr // the serving certificate names 127.0.0.1, whatever the port
	}
	agentKubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*raw, agentKubeconfig); err != nil {
		t.Fatal(err)
	}

	const host = "kuryr-test-crash3"
	if _, err := kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: host}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.CoreV1().Nodes().Delete(context.Background(), host, metav1.DeleteOptions{}) })
	// Released ports stay cooling for the whole test, so that the fourth ADD finds the pool empty.
	a := newAgent(t, e, host, fmt.Sprintf("[kubernetes]\nkubeconfig = %s\n[vif_pool]\nports_pool_min = 0\nports_pool_cooldown = 600\n", agentKubeconfig))
	rt := newRuntime(t, a)
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: rt.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.CoreV1().Namespaces().Delete(context.Background(), rt.ns, metav1.DeleteOptions{}) })
	pods := make([]*cnirun.Pod, 4)
	for i := range pods {
		pods[i] = rt.sandbox()
		pod, err := kc.CoreV1().Pods(rt.ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: pods[i].Name},
			Spec:       corev1.PodSpec{NodeName: host, Containers: []corev1.Container{{Name: "c", Image: "localhost/none:never", ImagePullPolicy: corev1.PullNever}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods[i].UID = string(pod.UID)
	}
	t.Cleanup(func() {
		for _, p := range pods {
			_ = kc.CoreV1().Pods(rt.ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{})
		}
	})

	a.startReady()
	// Three ports in the pool: pod 0 takes one with the API up, pods 1 and 2 the others with it down.
	n := 3
	resp, err := manage.NewClient(a.manageSock).Do(ctx, "POST", manage.PathPopulate, manage.PopulateRequest{Trunks: []string{host}, NumPorts: &n}, true)
	if err != nil || !resp.OK() {
		t.Fatalf("populate the pool: %v %s", err, respBody(resp))
	}
	if err := rt.add(ctx, pods[0]); err != nil {
		t.Fatalf("ADD with the API server up: %v", err)
	}
	waitAnnotated(t, ctx, kc, rt.ns, pods[0])

	// The API server hangs: the pod cache, annotations and Events are stuck; the CNI path is not.
	proxy.setHang(t, true)
	if err := rt.add(ctx, pods[1]); err != nil {
		t.Fatalf("ADD with the API server hanging: %v", err)
	}
	if err := rt.del(ctx, pods[0]); err != nil {
		t.Fatalf("DEL with the API server hanging: %v", err)
	}
	// Then it refuses connections.
	proxy.down()
	if err := rt.add(ctx, pods[2]); err != nil {
		t.Fatalf("ADD with the API server down: %v", err)
	}
	// The pool is empty now (the released port cools for 10 minutes): this ADD waits for a
	// refill, which needs Neutron only, and the agent records a WaitingForPort Event it cannot send.
	// On a loaded Neutron the refill may outlast pool_wait_timeout: the runtime retries as kubelet
	// does, on the same sandbox.
	for err := rt.add(ctx, pods[3]); err != nil; err = rt.add(ctx, pods[3]) {
		if ctx.Err() != nil || !strings.Contains(err.Error(), "try again later") {
			t.Fatalf("ADD that waits for a refill with the API server down: %v", err)
		}
	}
	if a.exited() {
		t.Fatalf("the agent exited while the API server was down: %v", a.exitState())
	}
	// The checkpoint holds the three live pods and the released port, and nothing leaked.
	r := a.settle(t, ctx, "with the API server down", 90*time.Second, rt.liveContainers)
	if r.InUse != 3 || r.Cooling != 1 {
		t.Errorf("checkpoint: %d attachments and %d cooling ports, want 3 and 1", r.InUse, r.Cooling)
	}

	outage := time.Now()
	proxy.setHang(t, false)
	for _, p := range pods[1:] {
		waitAnnotated(t, ctx, kc, rt.ns, p)
	}
	waitEvent(t, ctx, kc, rt.ns, pods[3].Name, "WaitingForPort")
	t.Logf("annotations and the Event caught up %s after the API server came back", time.Since(outage).Round(time.Second))
	testutil.Report(t, fmt.Sprintf("kube API down: adds=%d dels=%d during the outage=3 ADD + 1 DEL; annotations and Events caught up", rt.adds.Load(), rt.dels.Load()))
}

func respBody(r *manage.Response) string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf("status %d: %s", r.StatusCode, r.Body)
}

// waitAnnotated waits until the pod carries the agent's port annotation for the ADD result it got.
func waitAnnotated(t *testing.T, ctx context.Context, kc kubernetes.Interface, ns string, p *cnirun.Pod) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		got, err := kc.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			continue
		}
		last = got.Annotations[agent.PortAnnotation]
		var v agent.PortAnnotationValue
		if json.Unmarshal([]byte(last), &v) == nil && v.PortID != "" && strings.EqualFold(v.MAC, p.Result.Interfaces[0].Mac) &&
			len(v.IPs) == 1 && v.IPs[0] == p.Result.IPs[0].Address.IP.String() {
			return
		}
	}
	t.Fatalf("pod %s/%s never got its port annotation (last: %s)", ns, p.Name, last)
}

// waitEvent waits until the pod has an Event with reason from the agent.
func waitEvent(t *testing.T, ctx context.Context, kc kubernetes.Interface, ns, pod, reason string) {
	t.Helper()
	var seen []string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		evs, err := kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
		if err != nil {
			continue
		}
		seen = seen[:0]
		for _, e := range evs.Items {
			if e.Reason == reason && e.Source.Component == "kuryr-agent" {
				return
			}
			seen = append(seen, e.Reason)
		}
	}
	t.Fatalf("pod %s/%s never got a %s Event from kuryr-agent (seen: %v)", ns, pod, reason, seen)
}
