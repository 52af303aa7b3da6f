# KubeRay starts Ray with `bash -lc`, a login shell, whose /etc/profile (Debian's, in the
# python:3.11-slim image) resets PATH and so loses the image's virtual environment, where `ray`
# and `fedrun` are. Mounted into /etc/profile.d/, which /etc/profile reads after that reset.
export PATH="/opt/venv/bin:$PATH"
