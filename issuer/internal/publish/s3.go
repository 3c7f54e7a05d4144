package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/kube-sts/kube-sts/issuer/internal/config"
)

// MetadataGeneration is the user metadata key that carries the generation on
// every object a Bucket writes (x-amz-meta-kube-sts-generation).
const MetadataGeneration = "kube-sts-generation"

// Bucket is an S3 or S3-compatible bucket target.
type Bucket struct {
	client *s3.Client
	bucket string
	prefix string
	name   string

	// etags holds, per base, the ETag of the JWKS object at the last Read
	// ("" when there was none): the next Put writes the JWKS only if it is
	// still that object (If-Match, or If-None-Match: * for none), so a
	// replica never overwrites a set another writer put there after it
	// looked.
	mu    sync.Mutex
	etags map[string]string
}

// NewBucket builds the S3 client for t. Credentials come from the AWS SDK's
// default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a web identity
// token, shared config files); they are never logged.
func NewBucket(ctx context.Context, t config.S3Target) (*Bucket, error) {
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(t.Region),
		// S3-compatible servers do not all understand the newer default
		// checksums; compute them only where the API requires them.
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 caFile: %w", err)
		}
		opts = append(opts, awsconfig.WithCustomCABundle(bytes.NewReader(pem)))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 client configuration: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if t.Endpoint != "" {
			o.BaseEndpoint = aws.String(t.Endpoint)
		}
		o.UsePathStyle = t.PathStyle
	})
	return &Bucket{client: client, bucket: t.Bucket, prefix: t.Prefix, name: config.PublishTarget{S3: &t}.String(), etags: map[string]string{}}, nil
}

func (b *Bucket) String() string { return b.name }

func (b *Bucket) key(base, name string) string { return b.prefix + Join(base, name) }

// maxJWKS bounds what Read takes of a JWKS object (ours are a few KiB).
const maxJWKS = 1 << 20

// Read reads the JWKS object and the generation in its metadata.
func (b *Bucket) Read(ctx context.Context, base string) (string, []byte, bool, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(b.key(base, NameJWKS))})
	if err != nil {
		var nf *types.NoSuchKey
		var api smithy.APIError
		if errors.As(err, &nf) || (errors.As(err, &api) && (api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound")) {
			b.setETag(base, "")
			return "", nil, false, nil
		}
		return "", nil, false, err
	}
	defer out.Body.Close()
	b.setETag(base, aws.ToString(out.ETag))
	jwks, err := io.ReadAll(io.LimitReader(out.Body, maxJWKS))
	if err != nil {
		return "", nil, false, fmt.Errorf("read %s: %w", b.key(base, NameJWKS), err)
	}
	return out.Metadata[MetadataGeneration], jwks, true, nil
}

func (b *Bucket) setETag(base, etag string) {
	b.mu.Lock()
	b.etags[base] = etag
	b.mu.Unlock()
}

// ErrChanged: the JWKS object changed between the Read and the Put.
var ErrChanged = errors.New("the JWKS object changed since it was read (another writer); not overwritten")

// Put writes each object with its content type, Cache-Control and the
// generation as metadata. The JWKS object is written on condition that it
// is still what the last Read saw; when it is not, Put writes nothing and
// returns ErrChanged (the next attempt reads again).
func (b *Bucket) Put(ctx context.Context, base string, objs []Object, cacheControl, gen string) error {
	b.mu.Lock()
	etag, read := b.etags[base]
	b.mu.Unlock()
	for _, o := range objs {
		in := &s3.PutObjectInput{
			Bucket:       aws.String(b.bucket),
			Key:          aws.String(b.key(base, o.Name)),
			Body:         bytes.NewReader(o.Body),
			ContentType:  aws.String(o.ContentType),
			CacheControl: aws.String(cacheControl),
			Metadata:     map[string]string{MetadataGeneration: gen},
		}
		if o.Name == NameJWKS && read {
			if etag == "" {
				in.IfNoneMatch = aws.String("*")
			} else {
				in.IfMatch = aws.String(etag)
			}
		}
		_, err := b.client.PutObject(ctx, in)
		var api smithy.APIError
		if errors.As(err, &api) && (api.ErrorCode() == "PreconditionFailed" || api.ErrorCode() == "ConditionalRequestConflict") {
			return fmt.Errorf("put %s: %w", b.key(base, o.Name), ErrChanged)
		}
		if err != nil {
			return fmt.Errorf("put %s: %w", b.key(base, o.Name), err)
		}
	}
	return nil
}
