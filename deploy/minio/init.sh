#!/bin/sh
# minio-init (docker-compose.yaml): MLflow's artifact bucket and a MinIO user that may use only that
# bucket. Runs in the minio/mc image after MinIO is healthy; safe to run again (every step is
# idempotent). Credentials come from the environment (compose reads them from .env).
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${MINIO_BUCKET:?}" "${MINIO_MLFLOW_ACCESS_KEY:?}" "${MINIO_MLFLOW_SECRET_KEY:?}"

mc alias set loop http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "loop/$MINIO_BUCKET"
mc anonymous set none "loop/$MINIO_BUCKET"

policy=/tmp/mlflow-artifacts-policy.json
cat > "$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"], "Resource": ["arn:aws:s3:::$MINIO_BUCKET"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": ["arn:aws:s3:::$MINIO_BUCKET/*"]}
  ]
}
JSON
mc admin policy create loop mlflow-artifacts "$policy"
mc admin user add loop "$MINIO_MLFLOW_ACCESS_KEY" "$MINIO_MLFLOW_SECRET_KEY"
if ! out=$(mc admin policy attach loop mlflow-artifacts --user "$MINIO_MLFLOW_ACCESS_KEY" 2>&1); then
  case "$out" in
    *already*) ;;  # a second run: the policy is attached from the first
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
echo "bucket $MINIO_BUCKET ready; user $MINIO_MLFLOW_ACCESS_KEY may read and write it"
