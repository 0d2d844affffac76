from datetime import date

from records import domain as records


def test_a_record_number_carries_a_luhn_check_digit():
    for _ in range(50):
        number = records.new_medical_record_number()
        assert len(number) == 9 and number.isdigit()
        assert records.luhn_check_digit(number[:-1]) == int(number[-1])
    assert records.luhn_check_digit("7992739871") == 3  # the textbook example


def test_the_same_person_is_recognised_despite_case_and_spaces():
    one = records.identity_key("Ana", "Reyes", date(1984, 3, 9), "ana@example.org")
    assert one == records.identity_key(" ANA", "reyes ", date(1984, 3, 9), "Ana@Example.org")
    assert one != records.identity_key("Ana", "Reyes", date(1984, 3, 10), "ana@example.org")


def test_the_preferred_contact_must_be_reachable():
    assert records.reachability_problem({"preferred_contact": "email", "email": None})[0] == "email"
    assert records.reachability_problem({"preferred_contact": "sms", "phone": ""})[0] == "phone"
    assert records.reachability_problem({"preferred_contact": "phone", "phone": "+1 555 0100"}) is None


def test_a_name_is_searched_without_case_or_accents():
    assert records.search_name("José ", " Müller-Lüdenscheidt") == "jose muller-ludenscheidt"
    assert records.search_words("  MUL  jos ") == ["mul", "jos"]
    assert records.search_words(" \t ") == []
