# The Astro project image (`astro dev start`, `astro deploy`): Astro Runtime for Airflow 3.3 on
# Python 3.11 (the Python of the lock). Runtime 3 tags read <Airflow major.minor>-<Runtime build>,
# and the `-python-3.11` suffix picks the interpreter. NOT VERIFIED HERE: which 3.3 build ships
# Airflow 3.3.2 exactly (this build number comes from public Astro projects, not from Astronomer's
# release notes, and no machine here can pull the image). Check it before relying on it:
#   docker run --rm astrocrpublic.azurecr.io/runtime:3.3-8-python-3.11 airflow version
# and see docs/deploy.md ("Astro").
FROM astrocrpublic.azurecr.io/runtime:3.3-8-python-3.11

# The runtime image's ONBUILD steps have run at this point: they installed packages.txt (OS
# packages; none needed) and requirements.txt (the project's lock, which pins apache-airflow==3.3.2:
# on a build that ships another 3.3.x, that install moves Airflow to 3.3.2 under the runtime, which
# is why the build above should be the one that already ships it) and copied the project to
# /usr/local/airflow. The loop's code imports as `include`, so the project root goes on the path,
# as PYTHONPATH does for `make up` and docker-compose.yaml.
ENV PYTHONPATH=/usr/local/airflow

# Fail the build rather than ship an image whose packages disagree: Airflow must be the locked
# version the tests ran against, and no package of the runtime may be broken by the lock's pins.
RUN python -c "import airflow, sys; v = airflow.__version__; sys.exit(0 if v == '3.3.2' else f'Airflow {v} in the image, the lock pins 3.3.2')" \
    && pip check
