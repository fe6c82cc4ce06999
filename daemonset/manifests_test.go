// Package daemonset_test checks the manifests operators apply (kubectl apply -k daemonset/): what
// they must hold, and that the real kube-apiserver accepts them.
package daemonset_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// object is one document of a manifest.
type object struct {
	file, kind, name string
	raw              []byte
}

// manifests reads every document of every resource of the kustomization.
func manifests(t *testing.T) []object {
	t.Helper()
	var k struct {
		Namespace string   `json:"namespace"`
		Resources []string `json:"resources"`
	}
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Namespace != "kube-system" {
		t.Errorf("kustomization namespace %q, want kube-system", k.Namespace)
	}
	var objs []object
	for _, file := range k.Resources {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(b, []byte("\n---")) {
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if meta.Kind == "" {
				continue // comments only
			}
			objs = append(objs, object{file: file, kind: meta.Kind, name: meta.Metadata.Name, raw: doc})
		}
	}
	return objs
}

func decode[T any](t *testing.T, objs []object, kind, name string) *T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			v := new(T)
			if err := yaml.UnmarshalStrict(o.raw, v); err != nil {
				t.Fatalf("%s %s in %s: %v", kind, name, o.file, err)
			}
			return v
		}
	}
	t.Fatalf("no %s %s in the kustomization", kind, name)
	return nil
}

// TestAgentDaemonSet: what issue 7 asks of the agent's DaemonSet.
func TestAgentDaemonSet(t *testing.T) {
	ds := decode[appsv1.DaemonSet](t, manifests(t), "DaemonSet", "kuryr-agent")
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.ServiceAccountName != "kuryr-agent" {
		t.Errorf("hostNetwork %v, serviceAccount %q", spec.HostNetwork, spec.ServiceAccountName)
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil || ru.MaxUnavailable.IntValue() != 1 || ru.MaxSurge.IntValue() != 0 {
		t.Errorf("update strategy %+v: want a rolling update of one node at a time, without surge (two agents on one node would fight over the sockets)", ds.Spec.UpdateStrategy)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("the agent container is not privileged: it cannot enter pod network namespaces")
	}
	if !strings.HasPrefix(c.Image, "localhost/") {
		t.Errorf("image %q: only locally built images may be referenced", c.Image)
	}
	var nodeName bool
	for _, e := range c.Env {
		nodeName = nodeName || e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}
	if !nodeName {
		t.Error("NODE_NAME does not come from the downward API (spec.nodeName)")
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/ready" || p.HTTPGet.Host != "127.0.0.1" {
		t.Errorf("readiness probe %+v: want GET /ready on loopback (true once the pools are loaded)", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/alive" {
		t.Errorf("liveness probe %+v: want GET /alive", p)
	}
	if a, r := c.ReadinessProbe, c.LivenessProbe; a != nil && r != nil && a.HTTPGet.Port != r.HTTPGet.Port {
		t.Errorf("probes on ports %v and %v", a.HTTPGet.Port, r.HTTPGet.Port)
	}
	// Every host path the issue names is mounted from the host.
	hostPaths := map[string]string{} // volume -> host path
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mounted := map[string]string{} // host path -> mount path
	for _, m := range c.VolumeMounts {
		if hp, ok := hostPaths[m.Name]; ok {
			mounted[hp] = m.MountPath
		}
	}
	for _, hp := range []string{"/run/kuryr", "/var/run/netns", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/kuryr"} {
		if _, ok := mounted[hp]; !ok {
			t.Errorf("host path %s is not mounted (mounted: %v)", hp, mounted)
		}
	}
	// The install step writes where the host's CNI directories are mounted.
	for flag, hp := range map[string]string{"--install-cni-bin-dir=": "/opt/cni/bin", "--install-cni-conf-dir=": "/etc/cni/net.d"} {
		i := slices.IndexFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, flag) })
		if i < 0 || strings.TrimPrefix(c.Args[i], flag) != mounted[hp] {
			t.Errorf("%s: args %v, want it to be the mount of the host's %s (%s)", flag, c.Args, hp, mounted[hp])
		}
	}
	if ds.Spec.Template.Spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q: the node's networking must not be evicted first", spec.PriorityClassName)
	}
}

// TestControllerDeployment: leader election with more than one replica, its own account.
func TestControllerDeployment(t *testing.T) {
	d := decode[appsv1.Deployment](t, manifests(t), "Deployment", "kuryr-controller")
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas %v: want 2 or more, one leading", d.Spec.Replicas)
	}
	spec := d.Spec.Template.Spec
	if spec.ServiceAccountName != "kuryr-controller" || len(spec.Containers) != 1 {
		t.Fatalf("serviceAccount %q, %d containers", spec.ServiceAccountName, len(spec.Containers))
	}
	if slices.Contains(spec.Containers[0].Args, "--leader-elect=false") {
		t.Error("leader election is off with several replicas")
	}
}

// TestRBACLeastPrivilege: the agent reads and annotates; only the controller writes
// KuryrNetworks; neither may touch Secrets or delete pods.
func TestRBACLeastPrivilege(t *testing.T) {
	objs := manifests(t)
	allowed := func(role *rbacv1.ClusterRole, group, resource, verb string) bool {
		for _, r := range role.Rules {
			if (slices.Contains(r.APIGroups, group) || slices.Contains(r.APIGroups, "*")) &&
				(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) &&
				(slices.Contains(r.Verbs, verb) || slices.Contains(r.Verbs, "*")) {
				return true
			}
		}
		return false
	}
	agent := decode[rbacv1.ClusterRole](t, objs, "ClusterRole", "kuryr-agent")
	ctl := decode[rbacv1.ClusterRole](t, objs, "ClusterRole", "kuryr-controller")
	tests := []struct {
		role                  *rbacv1.ClusterRole
		name                  string
		group, resource, verb string
		want                  bool
	}{
		{agent, "agent", "", "pods", "watch", true},
		{agent, "agent", "", "pods", "patch", true},
		{agent, "agent", "", "events", "create", true},
		{agent, "agent", "openstack.org", "kuryrnetworks", "watch", true},
		{agent, "agent", "openstack.org", "kuryrnetworks", "update", false},
		{agent, "agent", "", "pods", "delete", false},
		{agent, "agent", "", "secrets", "get", false},
		{agent, "agent", "", "nodes", "update", false},
		{ctl, "controller", "openstack.org", "kuryrnetworks", "update", true},
		{ctl, "controller", "openstack.org", "kuryrnetworks/status", "update", true},
		{ctl, "controller", "", "namespaces", "watch", true},
		{ctl, "controller", "", "pods", "delete", false},
		{ctl, "controller", "", "secrets", "get", false},
	}
	for _, tc := range tests {
		if got := allowed(tc.role, tc.group, tc.resource, tc.verb); got != tc.want {
			t.Errorf("%s may %s %s/%s: %v, want %v", tc.name, tc.verb, tc.group, tc.resource, got, tc.want)
		}
	}
}

// TestConfigMapKuryrConf: the shipped kuryr.conf loads and validates, and the agent's socket and
// health address match the DaemonSet's mounts and probes.
func TestConfigMapKuryrConf(t *testing.T) {
	objs := manifests(t)
	cm := decode[corev1.ConfigMap](t, objs, "ConfigMap", "kuryr-config")
	conf, ok := cm.Data["kuryr.conf"]
	if !ok {
		t.Fatal("the ConfigMap holds no kuryr.conf")
	}
	cfg, err := config.Parse([]byte(conf))
	if err != nil {
		t.Fatalf("kuryr.conf of the ConfigMap: %v", err)
	}
	if u := cfg.Unknown(); len(u) > 0 {
		t.Errorf("unknown options in the ConfigMap: %v", u)
	}
	ds := decode[appsv1.DaemonSet](t, objs, "DaemonSet", "kuryr-agent")
	c := ds.Spec.Template.Spec.Containers[0]
	if port := c.ReadinessProbe.HTTPGet.Port.String(); !strings.HasSuffix(cfg.CNIHealthServer.HealthAddress, ":"+port) {
		t.Errorf("[cni_health_server] health_address %q, the probes use port %s", cfg.CNIHealthServer.HealthAddress, port)
	}
	if !strings.HasPrefix(cfg.CNIDaemon.SocketPath, "/run/kuryr/") {
		t.Errorf("[cni_daemon] socket_path %q is not under the mounted /run/kuryr", cfg.CNIDaemon.SocketPath)
	}
	if !strings.HasPrefix(cfg.CNIDaemon.CheckpointPath, "/var/lib/kuryr/") {
		t.Errorf("[cni_daemon] checkpoint_path %q is not under the mounted /var/lib/kuryr: it would not survive a pod restart", cfg.CNIDaemon.CheckpointPath)
	}
}

// TestApplyServerDryRun: the real kube-apiserver accepts every object of the kustomization
// (kubectl apply --server-side --dry-run=server -k daemonset/).
func TestApplyServerDryRun(t *testing.T) {
	kubectl := testutil.Kubectl(t)
	kubeconfig := testutil.Kubeconfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "--dry-run=server",
		"--field-manager=kuryr-manifest-test", "-k", ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply --server-side --dry-run=server -k daemonset/: %v\n%s", err, out)
	}
	for _, o := range manifests(t) {
		want := regexp.MustCompile(fmt.Sprintf(`(?m)^%s(\.[a-z0-9.]+)?/%s serverside-applied \(server dry run\)$`,
			strings.ToLower(o.kind), regexp.QuoteMeta(o.name)))
		if !want.Match(out) {
			t.Errorf("kubectl did not apply %s %s:\n%s", o.kind, o.name, out)
		}
	}
	t.Logf("%s", out)
}
