// mkoci packs one static binary as a single-layer OCI image-layout tar that
// `ctr -n k8s.io images import` loads under the given name, so that the full-node tests need no
// registry and no container engine:
//
//	mkoci -ref localhost/kuryr-test/pause:1 -bin pause -out pause.tar
//
// The binary lands at /<basename> and is the image's entrypoint (arguments: -arg, repeatable).
// The output is deterministic: same binary, same digests.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type args []string

func (a *args) String() string     { return strings.Join(*a, " ") }
func (a *args) Set(s string) error { *a = append(*a, s); return nil }

func main() {
	ref := flag.String("ref", "", "image name, e.g. localhost/kuryr-test/pause:1")
	bin := flag.String("bin", "", "the static binary to pack")
	out := flag.String("out", "", "the OCI image-layout tar to write")
	var cmdArgs args
	flag.Var(&cmdArgs, "arg", "an argument of the entrypoint (repeatable)")
	flag.Parse()
	if *ref == "" || *bin == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*ref, *bin, *out, cmdArgs); err != nil {
		fmt.Fprintln(os.Stderr, "mkoci:", err)
		os.Exit(1)
	}
}

func run(ref, bin, out string, cmdArgs []string) error {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("read the binary: %w", err)
	}
	name := filepath.Base(bin)
	layerTar, err := tarOf([]file{{name: name, mode: 0o755, data: exe}})
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(layerTar); err != nil {
		return fmt.Errorf("gzip the layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("gzip the layer: %w", err)
	}
	plat := platform{Architecture: runtime.GOARCH, OS: "linux"}
	config, err := json.Marshal(map[string]any{
		"architecture": plat.Architecture,
		"os":           plat.OS,
		"config":       map[string]any{"Entrypoint": []string{"/" + name}, "Cmd": cmdArgs},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{digest(layerTar)}},
	})
	if err != nil {
		return err
	}
	blobs := map[string][]byte{}
	desc := func(mediaType string, b []byte) descriptor {
		d := descriptor{MediaType: mediaType, Digest: digest(b), Size: int64(len(b))}
		blobs[d.Digest] = b
		return d
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        desc("application/vnd.oci.image.config.v1+json", config),
		"layers":        []descriptor{desc("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes())},
	})
	if err != nil {
		return err
	}
	md := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	tag := ref[strings.LastIndex(ref, ":")+1:]
	md.Annotations = map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag}
	md.Platform = &plat
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []descriptor{md}})
	if err != nil {
		return err
	}
	files := []file{
		{name: "oci-layout", mode: 0o644, data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: "index.json", mode: 0o644, data: index},
		{name: "blobs/", mode: 0o755, dir: true},
		{name: "blobs/sha256/", mode: 0o755, dir: true},
	}
	for _, d := range []string{md.Digest, digest(config), digest(gz.Bytes())} {
		files = append(files, file{name: "blobs/sha256/" + strings.TrimPrefix(d, "sha256:"), mode: 0o644, data: blobs[d]})
	}
	archive, err := tarOf(files)
	if err != nil {
		return fmt.Errorf("image tar: %w", err)
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, archive, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

type file struct {
	name string
	mode int64
	data []byte
	dir  bool
}

// tarOf writes files owned by root with a zero mtime: the same input gives the same bytes.
func tarOf(files []file) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
