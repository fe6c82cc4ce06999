package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kuryr-pools/kuryr/agent"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/test/cnirun"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// TestKubernetesAnnotationAndEvent runs the agent against the real kube-apiserver: a pod whose ADD
// finds the pool empty gets a WaitingForPort Event, and every attached pod gets its port annotation.
func TestKubernetesAnnotationAndEvent(t *testing.T) {
	kc, _, kubeconfig := testutil.KubeClient(t)
	ctx := context.Background()
	// A host with an (emulated) L2 agent (hack/neutron-up.sh BM_HOSTS): bindings succeed at once,
	// so the refill the pod waits for takes Neutron's create time, not its failed-binding retries.
	const node = "kuryr-test-kube1"
	db := ovsdb(t)
	_ = kc.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}) // left by a killed run
	if _, err := kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	const ns = "node-test"
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// A name of its own: the pod of an earlier run may still be there (no kubelet confirms deletions
	// on this node, hence the zero grace period below).
	p, err := cnirun.NewPod(ns, fmt.Sprintf("kube-%s-%d", node, time.Now().UnixNano()%1000000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	pod, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "localhost/none:never", ImagePullPolicy: corev1.PullNever}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kc.CoreV1().Pods(ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	p.UID = string(pod.UID)

	n := newNeutron(t)
	a := startAgentWith(t, n, node, "ovs", "[kubernetes]\nkubeconfig = "+kubeconfig+"\n[binding]\novsdb_connection = "+db+"\n#empty-pool\n")
	if _, err := a.runner.Add(ctx, p); err != nil {
		t.Fatalf("ADD: %v\n%s", err, a.log())
	}
	defer a.runner.Del(ctx, p) //nolint:errcheck // cleanup
	eventually(t, time.Minute, "pod annotated with its port", func() (bool, string) {
		got, err := kc.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		raw := got.Annotations[agent.PortAnnotation]
		var v agent.PortAnnotationValue
		if json.Unmarshal([]byte(raw), &v) != nil {
			return false, raw
		}
		return v.MAC == p.Result.Interfaces[0].Mac && len(v.IPs) == 1 && v.IPs[0] == p.Result.IPs[0].Address.IP.String() && v.PortID != "", raw
	})
	eventually(t, time.Minute, "WaitingForPort Event on the pod", func() (bool, string) {
		evs, err := kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == "WaitingForPort" && e.Source.Component == "kuryr-agent" && strings.Contains(e.Message, "refill in flight") {
				return true, ""
			}
		}
		return false, strings.Join(seen, "; ")
	})
}

// TestQuotaExhaustionEvent: when Neutron's quota stops the refills, the agent says so with a
// NeutronQuotaExceeded Event on its Node (real kube-apiserver, real neutron-server quota).
func TestQuotaExhaustionEvent(t *testing.T) {
	kc, _, kubeconfig := testutil.KubeClient(t)
	ctx := context.Background()
	node := fmt.Sprintf("node-quota-%d", time.Now().UnixNano()%100000)
	if _, err := kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	n := newNeutron(t)
	project := "kuryr-quota-" + node
	if err := fakeneutron.SetPortQuota(ctx, n.fx.Endpoint, project, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fakeneutron.SetPortQuota(context.Background(), n.fx.Endpoint, project, -1) })
	// The pool's project has no room for a single port: every refill fails.
	a := startAgentWith(t, n, node, "bridge", "[kubernetes]\nkubeconfig = "+kubeconfig+"\n[neutron_defaults]\nproject = "+project+"\n")
	eventually(t, 60*time.Second, "NeutronQuotaExceeded Event on the Node", func() (bool, string) {
		evs, err := kc.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == agent.ReasonQuotaExceeded && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, project) {
				return true, ""
			}
		}
		return false, strings.Join(seen, "; ")
	})
	if s := a.scrape(t); !strings.Contains(s, "kuryr_neutron_requests_total") {
		t.Errorf("no Neutron request metrics")
	}
}
