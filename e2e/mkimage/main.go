// Command mkimage packs one static binary as a single-layer OCI image
// tarball (oci-layout, index.json, blobs/sha256/...) that
// `ctr images import` accepts: the end-to-end test's pause image, made
// without a registry or a docker daemon.
//
//	mkimage -binary pause -name localhost/maclan/pause:e2e -o pause.tar
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
	"path"
	"runtime"
	"time"
)

func main() {
	binary := flag.String("binary", "", "static executable to pack (required)")
	name := flag.String("name", "localhost/maclan/pause:e2e", "image reference recorded in the index")
	out := flag.String("o", "pause.tar", "output OCI image tarball")
	entry := flag.String("entrypoint", "/pause", "path of the executable inside the image")
	flag.Parse()
	if *binary == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -binary is required")
		os.Exit(2)
	}
	if err := pack(*binary, *name, *entry, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// epoch dates every file of the image, so that one binary always gives the
// same digests.
var epoch = time.Unix(0, 0).UTC()

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

func pack(binary, name, entry, out string) error {
	exe, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	layer, diffID, err := layerOf(exe, entry)
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch,
		"config":       map[string]any{"Entrypoint": []string{entry}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history":      []any{map[string]any{"created": epoch, "created_by": "maclan e2e/mkimage"}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        desc("application/vnd.oci.image.config.v1+json", config),
		"layers":        []descriptor{desc("application/vnd.oci.image.layer.v1.tar+gzip", layer)},
	})
	if err != nil {
		return err
	}
	mdesc := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	mdesc.Platform = &platform{Architecture: runtime.GOARCH, OS: "linux"}
	mdesc.Annotations = map[string]string{
		"io.containerd.image.name":          name, // what ctr names the imported image
		"org.opencontainers.image.ref.name": name,
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{mdesc},
	})
	if err != nil {
		return err
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
	}
	for _, blob := range [][]byte{layer, config, manifest} {
		files = append(files, struct {
			name string
			data []byte
		}{path.Join("blobs/sha256", hexDigest(blob)), blob})
	}
	if err := writeDir(tw, "blobs/"); err != nil {
		return err
	}
	if err := writeDir(tw, "blobs/sha256/"); err != nil {
		return err
	}
	for _, f := range files {
		if err := writeFile(tw, f.name, f.data, 0o644); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// layerOf makes the gzipped layer holding exe at entry, and its diff ID
// (the digest of the uncompressed tar).
func layerOf(exe []byte, entry string) (layer []byte, diffID string, err error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	if err := writeFile(tw, entry[1:], exe, 0o755); err != nil {
		return nil, "", err
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), "sha256:" + hexDigest(raw.Bytes()), nil
}

func desc(mediaType string, blob []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: "sha256:" + hexDigest(blob), Size: int64(len(blob))}
}

func hexDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func writeDir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch})
}

func writeFile(tw *tar.Writer, name string, data []byte, mode int64) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}
