"""The text bundle's files (text/bundle.py): what the manifest warns about."""


def test_a_student_keeping_under_95_percent_of_the_teachers_quality_is_warned_with_a_next_step():
    from edge_distill.text.bundle import quality_warnings

    def manifest(student: float) -> dict:
        return {"task": "text-classification",
                "model": {"layers_from_teacher": [5], "variant": "student_int8", "precision": "int8"},
                "metrics": {"quality": {"teacher_fp32": {"accuracy": 0.843}, "student_int8": {"accuracy": student}}}}

    (warning,) = quality_warnings(manifest(0.686))  # the Debian-sections classifier the issue tried
    assert warning["kind"] == "quality_kept" and "the int8 student keeps 81% of the teacher's test accuracy" in warning["message"]
    assert "--layers 2" in warning["message"]
    assert quality_warnings(manifest(0.81)) == []  # 96%
