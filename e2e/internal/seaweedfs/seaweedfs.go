// Package seaweedfs runs SeaweedFS (master, volume, filer and its S3
// gateway in one `weed server`) on loopback: a real S3-compatible server,
// built from the Go module proxy by e2e/hack/toolchain.sh, for the issuer's
// S3 publishing. Requests must be signed with the test's access key; one
// bucket can be made readable anonymously, like a bucket a cloud's OIDC
// federation reads.
package seaweedfs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kube-sts/kube-sts/e2e/internal/controlplane"
	"github.com/kube-sts/kube-sts/e2e/internal/procs"
)

// Server is a running SeaweedFS with its S3 gateway.
type Server struct {
	*procs.Proc
	// Endpoint is http://127.0.0.1:<s3 port>.
	Endpoint             string
	AccessKey, SecretKey string
	// Client is an S3 client signed with the access key.
	Client *s3.Client
}

// Region is what clients sign for; SeaweedFS accepts any.
const Region = "us-east-1"

// Start runs weed server with a bucket that the access key may write and
// anyone may read. It stops at test cleanup.
func Start(ctx context.Context, t testing.TB, publicBucket string) *Server {
	t.Helper()
	bin, err := controlplane.Binary(ctx, "weed")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{AccessKey: "kube-sts-publisher", SecretKey: "not-a-secret-of-anything-" + fmt.Sprint(time.Now().UnixNano())}
	identities := map[string]any{"identities": []map[string]any{
		{"name": "publisher", "credentials": []map[string]string{{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
			"actions": []string{"Read", "Write", "List", "Tagging", "Admin"}},
		{"name": "anonymous", "actions": []string{"Read:" + publicBucket}},
	}}
	raw, _ := json.Marshal(identities)
	cfg := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	port := func() string { return fmt.Sprint(procs.FreePort(t)) }
	s3Port := port()
	// Every listener on a port of our choosing: the gRPC ports would
	// otherwise be the HTTP port + 10000, and the catalog servers fixed.
	s.Proc = procs.Start(t, "seaweedfs", dir, bin, "server", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port="+port(), "-master.port.grpc="+port(), "-volume.port="+port(), "-volume.port.grpc="+port(), "-volume.max=4",
		"-filer", "-filer.port="+port(), "-filer.port.grpc="+port(),
		"-s3", "-s3.port="+s3Port, "-s3.port.grpc="+port(), "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.config="+cfg)
	s.Endpoint = "http://127.0.0.1:" + s3Port
	s.Client = s3.New(s3.Options{
		Region: Region, BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	// The gateway answers before the filer behind it can store anything:
	// wait until the bucket can be made.
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, err := s.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(publicBucket)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SeaweedFS: create bucket %s: %v\n%s", publicBucket, err, s.Log())
		}
		time.Sleep(500 * time.Millisecond)
	}
	return s
}

// Get reads bucket/key anonymously over plain HTTP, as a relying party
// reading a public bucket does.
func (s *Server) Get(ctx context.Context, bucket, key string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/"+bucket+"/"+key, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}
